// Building the page: elements from data, never from markup.
//
// Every text from the server (titles, descriptions, values, errors) goes through
// text nodes, so nothing it holds is ever parsed as HTML.

/**
 * An element: `h("p", {class: "note"}, "text", child, ...)`.
 *
 * Attributes: `class`, `text` (its textContent), `dataset` (an object), `on` (an object
 * of event listeners), booleans set as properties (`disabled`, `hidden`, `required`,
 * `checked`, `multiple`, `noValidate`), anything else with setAttribute. Children are
 * nodes or strings (as text nodes); null, undefined and false are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "on") {
      for (const [type, listener] of Object.entries(value)) element.addEventListener(type, listener);
    } else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

const PROPERTIES = new Set(["disabled", "hidden", "required", "checked", "multiple",
                            "noValidate", "value", "selected"]);

/** Append children (nodes, strings, or arrays of them) to `parent`. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace the children of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** An id safe to use in `id` and `for` attributes, from any names. */
export function domId(...parts) {
  return parts.map((part) => String(part).replace(/[^A-Za-z0-9_-]/g,
    (c) => `_${c.codePointAt(0).toString(16)}_`)).join("--");
}

/** A value for people: numbers as they are, strings bare, anything else as JSON. */
export function formatValue(value) {
  if (value === undefined) return "—";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || value === null) {
    return String(value);
  }
  return JSON.stringify(value);
}

/** A time of day from an RFC 3339 timestamp (or now). */
export function formatTime(timestamp) {
  const date = timestamp ? new Date(timestamp) : new Date();
  if (Number.isNaN(date.getTime())) return String(timestamp);
  return date.toLocaleTimeString(undefined, {hour12: false}) +
    "." + String(date.getMilliseconds()).padStart(3, "0");
}

/**
 * A description (often a docstring) as paragraphs: blank lines separate them, single
 * line breaks are only wrapping. Answers an element of class `description`.
 */
export function description(text, tag = "div") {
  const parts = String(text).split(/\n\s*\n/).map((p) => p.replace(/\s+/g, " ").trim()).filter(Boolean);
  return h(tag, {class: "description"}, parts.map((part) => h("p", {text: part})));
}
