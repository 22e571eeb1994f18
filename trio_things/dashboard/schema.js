// Form controls built from a TD data schema.
//
// Each control answers the value it holds as JSON (`read`, which throws InputError for
// what cannot be one) and shows a value (`show`). The browser's own validation is off
// (the forms are `novalidate`): the server checks every value against the schema and
// its problem details say what is wrong, so the page never disagrees with it.

import {domId, formatValue, h} from "./dom.js";

export class InputError extends Error {
  constructor(message) {
    super(message);
    this.name = "InputError";
  }
}

/** The kind of control a schema gets. */
export function kindOf(schema) {
  if (!schema || typeof schema !== "object") return "json";
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return "enum";
  switch (schema.type) {
    case "boolean": return "boolean";
    case "integer": return "integer";
    case "number": return "number";
    case "string": return "string";
    case "null": return "null";
    default: return "json"; // object, array, a union, or no type at all
  }
}

/** Whether values of the schema can be plotted. */
export function isNumeric(schema) {
  const kind = kindOf(schema);
  return kind === "number" || kind === "integer";
}

/**
 * A control for one value of `schema`.
 * Returns {element, focusable, read(), show(value), setDisabled(flag)}; `element` holds
 * the input and its unit, `focusable` is what a <label for> names (its id is `id`).
 */
export function control(schema, id, {describedBy} = {}) {
  const kind = kindOf(schema);
  const common = {id, "aria-describedby": describedBy};
  let input;
  let read;
  let show;
  switch (kind) {
    case "enum": {
      input = h("select", common, schema.enum.map((value, index) =>
        h("option", {value: String(index), text: formatValue(value)})));
      read = () => schema.enum[Number(input.value)];
      show = (value) => {
        const index = schema.enum.findIndex((option) => JSON.stringify(option) === JSON.stringify(value));
        if (index >= 0) input.value = String(index);
      };
      break;
    }
    case "boolean": {
      input = h("input", {...common, type: "checkbox"});
      read = () => input.checked;
      show = (value) => { input.checked = Boolean(value); };
      break;
    }
    case "integer":
    case "number": {
      const step = schema.multipleOf ?? (kind === "integer" ? 1 : "any");
      input = h("input", {
        ...common, type: "number", inputmode: kind === "integer" ? "numeric" : "decimal",
        min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
        step,
      });
      read = () => {
        const text = input.value.trim();
        if (text === "") {
          if (input.validity.badInput) throw new InputError("not a number");
          return undefined;
        }
        const value = Number(text);
        if (!Number.isFinite(value)) throw new InputError(`${text} is not a number`);
        return value;
      };
      show = (value) => { input.value = typeof value === "number" ? String(value) : ""; };
      break;
    }
    case "string": {
      input = h("input", {...common, type: "text", autocomplete: "off", spellcheck: "false"});
      read = () => input.value;
      show = (value) => { input.value = value == null ? "" : String(value); };
      break;
    }
    case "null": {
      input = h("input", {...common, type: "text", value: "null", readonly: true});
      read = () => null;
      show = () => {};
      break;
    }
    default: {
      input = h("textarea", {...common, rows: 3, spellcheck: "false", class: "json",
                             placeholder: "JSON"});
      read = () => {
        const text = input.value.trim();
        if (text === "") return undefined;
        try {
          return JSON.parse(text);
        } catch (error) {
          throw new InputError(`not JSON: ${error.message}`);
        }
      };
      show = (value) => { input.value = value === undefined ? "" : JSON.stringify(value, null, 2); };
    }
  }
  const unit = schema && schema.unit ? h("span", {class: "unit", text: schema.unit}) : null;
  const element = h("span", {class: `control control-${kind}`}, input, unit);
  return {
    element,
    focusable: input,
    read,
    show,
    setDisabled(flag) { input.disabled = flag; },
  };
}

/**
 * The fields of an action's input: one labelled control per member of an object
 * schema, or one control for any other schema. Returns {element, read(), setDisabled()}.
 * `read()` answers the input to send (undefined for none).
 */
export function inputFields(schema, idPrefix) {
  if (!schema) return {element: null, read: () => undefined, setDisabled() {}};
  if (schema.type === "object" && schema.properties && typeof schema.properties === "object") {
    const required = new Set(Array.isArray(schema.required) ? schema.required : []);
    const fields = Object.entries(schema.properties).map(([name, member]) => {
      const id = domId(idPrefix, name);
      const hint = member.description ? h("small", {id: `${id}-hint`, class: "hint",
                                                    text: member.description}) : null;
      const field = control(member, id, {describedBy: hint ? hint.id : undefined});
      if (member.default !== undefined) field.show(member.default);
      if (required.has(name)) {
        field.focusable.required = true;  // for assistive technology; the form is novalidate
      }
      const label = h("label", {for: id},
        h("span", {class: "field-name", text: member.title || name}),
        required.has(name) ? h("span", {class: "required", "aria-hidden": "true", title: "required",
                                        text: " *"}) : null);
      return {name, field, element: h("div", {class: "field"}, label, field.element, hint)};
    });
    return {
      element: h("div", {class: "fields"}, fields.map((f) => f.element)),
      read() {
        const input = {};
        for (const {name, field} of fields) {
          let value;
          try {
            value = field.read();
          } catch (error) {
            throw new InputError(`${name}: ${error.message}`);
          }
          if (value !== undefined) input[name] = value;
        }
        return input;
      },
      setDisabled(flag) { for (const {field} of fields) field.setDisabled(flag); },
    };
  }
  const id = domId(idPrefix, "input");
  const field = control(schema, id);
  if (schema.default !== undefined) field.show(schema.default);
  const label = h("label", {for: id, text: schema.title || "input"});
  return {
    element: h("div", {class: "fields"}, h("div", {class: "field"}, label, field.element)),
    read: () => field.read(),
    setDisabled: (flag) => field.setDisabled(flag),
  };
}
