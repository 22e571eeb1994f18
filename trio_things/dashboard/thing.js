// One Thing's page, /dashboard/things/<name>, built from its Thing Description alone.
//
// Over the shared WebSocket it observes every property (observeallproperties) and
// subscribes to every event (subscribeallevents), both again after each reconnect,
// when it also fetches the TD again (the server may now serve another version of the
// Thing). Actions are invoked over the same socket, which is then pushed their status.

import {getJSON, getToken, ProblemError, request} from "./api.js";
import {ENDED} from "./connection.js";
import {description, domId, formatTime, formatValue, h, replace} from "./dom.js";
import {readFrames} from "./frames.js";
import {LivePlot} from "./plot.js";
import {control, inputFields, isNumeric} from "./schema.js";

const EVENT_LOG_SIZE = 200;        // entries kept in the event log
const INVOCATIONS_SHOWN = 5;       // invocations kept per action
const QUERY_INTERVAL = 1000;       // ms between queries of an invocation after a reconnect
const STREAM_TYPE = "multipart/x-mixed-replace";
const STATE_RANK = {sending: 0, pending: 1, running: 2, completed: 3, failed: 3, cancelled: 3};

export async function renderThing(context, name) {
  const page = new ThingPage(context, name);
  await page.load();
}

class ThingPage {
  constructor({main, connection, readonly, onError}, name) {
    this.main = main;
    this.connection = connection;
    this.readonly = readonly;
    this.onError = onError;
    this.name = name;
    this.td = null;
    this.tdText = "";
    this.properties = new Map();   // name -> PropertyView
    this.actions = new Map();      // name -> ActionView
    this.eventLog = null;
    this.lastEventID = null;
    this.streams = [];
    this.opened = false;
  }

  async load() {
    let td;
    try {
      td = await getJSON(`/${encodeURIComponent(this.name)}/`);
    } catch (error) {
      if (error instanceof ProblemError && error.status === 404) {
        this.notFound();
        return;
      }
      throw error;
    }
    this.render(td);
    this.connection.onState((state) => this.connectionChanged(state.state === "connected"));
    this.connection.onOpen(() => this.socketOpened().catch(this.onError));
  }

  notFound() {
    document.title = "Not found · trio-things";
    replace(this.main,
      h("nav", {class: "breadcrumbs", "aria-label": "Breadcrumbs"}, h("a", {href: "/dashboard/", text: "Things"})),
      h("h1", {text: "No such Thing"}),
      h("p", {}, "This server serves no Thing named ", h("code", {text: this.name}), "."));
  }

  /** The socket (re)opened: fetch the TD again, then observe and subscribe. */
  async socketOpened() {
    if (this.opened) {
      const td = await getJSON(`/${encodeURIComponent(this.name)}/`);
      if (JSON.stringify(td) !== this.tdText) this.render(td);  // new streams start anew
      else for (const stream of this.streams) stream.reload();  // the old responses ended
    }
    this.opened = true;
    const thingID = this.name;
    const td = this.td;
    const observable = Object.entries(td.properties || {})
      .filter(([, p]) => p.observable !== false && !p.writeOnly).map(([n]) => n);
    const readOnce = Object.entries(td.properties || {})
      .filter(([, p]) => p.observable === false && !p.writeOnly).map(([n]) => n);
    const work = [];
    if (observable.length) {
      work.push(this.connection.request("observeallproperties", {thingID}, (message) => {
        this.properties.get(message.name)?.update(message.value, message.timestamp);
      }));
    }
    if (readOnce.length) {
      work.push(this.connection.request("readmultipleproperties", {thingID, names: readOnce})
        .then((response) => {
          for (const [name, value] of Object.entries(response.values || {})) {
            this.properties.get(name)?.update(value, response.timestamp);
          }
        }));
    }
    if (Object.keys(td.events || {}).length) {
      const members = {thingID};
      if (this.lastEventID) members.lastEventID = this.lastEventID;
      work.push(this.connection.request("subscribeallevents", members,
                                        (message) => this.eventArrived(message)));
    }
    for (const action of this.actions.values()) action.reconnected();
    await Promise.all(work);
  }

  connectionChanged(connected) {
    this.main.classList.toggle("disconnected", !connected);
    for (const view of this.properties.values()) view.setConnected(connected);
    for (const view of this.actions.values()) view.setConnected(connected);
  }

  render(td) {
    for (const view of this.properties.values()) view.destroy();
    for (const stream of this.streams) stream.stop();
    this.td = td;
    this.tdText = JSON.stringify(td);
    this.properties.clear();
    this.actions.clear();
    this.streams = [];
    const title = td.title || this.name;
    document.title = `${title} · trio-things`;

    const context = {connection: this.connection, readonly: this.readonly, thingID: this.name};
    const sections = [];

    const links = Array.isArray(td.links) ? td.links.filter(
      (link) => link && typeof link.href === "string" &&
        String(link.type || "").split(";")[0].trim().toLowerCase() === STREAM_TYPE) : [];
    if (links.length) {
      this.streams = links.map((link) => new StreamView(link, td.base));
      sections.push(h("section", {class: "streams", "aria-labelledby": "streams-heading"},
        h("h2", {id: "streams-heading", text: "Streams"}),
        h("div", {class: "grid"}, this.streams.map((s) => s.element))));
    }

    const properties = Object.entries(td.properties || {});
    if (properties.length) {
      const cards = properties.map(([name, schema]) => {
        const view = new PropertyView(name, schema, context);
        this.properties.set(name, view);
        return view.element;
      });
      sections.push(h("section", {class: "properties", "aria-labelledby": "properties-heading"},
        h("h2", {id: "properties-heading", text: "Properties"}),
        h("div", {class: "grid"}, cards)));
    }

    const actions = Object.entries(td.actions || {});
    if (actions.length) {
      const cards = actions.map(([name, affordance]) => {
        const view = new ActionView(name, affordance, context);
        this.actions.set(name, view);
        return view.element;
      });
      sections.push(h("section", {class: "actions", "aria-labelledby": "actions-heading"},
        h("h2", {id: "actions-heading", text: "Actions"}),
        h("div", {class: "grid"}, cards)));
    }

    const events = Object.entries(td.events || {});
    if (events.length) {
      this.eventLog = h("ol", {class: "event-log", "aria-live": "polite", "aria-relevant": "additions",
                               "aria-label": "Events, newest first"});
      sections.push(h("section", {class: "events", "aria-labelledby": "events-heading"},
        h("h2", {id: "events-heading", text: "Events"}),
        h("dl", {class: "event-kinds"}, events.map(([name, e]) => [
          h("dt", {}, h("code", {text: name}), e.title ? ` ${e.title}` : ""),
          h("dd", {}, e.description ? description(e.description) : null),
        ])),
        h("h3", {text: "Log"}),
        this.eventLog,
        h("p", {class: "empty-log", text: "No events yet."})));
    }

    replace(this.main,
      h("nav", {class: "breadcrumbs", "aria-label": "Breadcrumbs"},
        h("a", {href: "/dashboard/", text: "Things"}), " / ", h("span", {text: title})),
      h("header", {class: "thing-header"},
        h("h1", {text: title}),
        td.description ? description(td.description) : null,
        h("p", {class: "meta"}, h("code", {text: this.name}),
          td.id ? [" · ", h("code", {class: "td-id", text: td.id})] : null)),
      this.readonly ? h("p", {class: "notice", role: "note",
        text: "Read-only access: writing properties, invoking and cancelling actions are disabled."}) : null,
      sections.length ? sections : h("p", {text: "This Thing has no properties, actions or events."}));

    for (const view of this.properties.values()) view.mounted();
    const connected = this.connection.isOpen();
    this.connectionChanged(connected);
  }

  eventArrived(message) {
    if (message.eventID) this.lastEventID = message.eventID;
    if (message.gap) {
      if (message.gap.resumeID) this.lastEventID = message.gap.resumeID;
      this.logEvent(h("li", {class: "gap", dataset: {kind: "gap"}},
        h("time", {text: formatTime(message.timestamp)}),
        h("span", {class: "event-name", text: "missed"}),
        h("span", {class: "event-data", text: `Events may have been missed: ${message.gap.detail || ""}`})));
      return;
    }
    this.logEvent(h("li", {dataset: {event: message.name}},
      h("time", {datetime: message.timestamp, text: formatTime(message.timestamp)}),
      h("span", {class: "event-name", text: message.name}),
      h("code", {class: "event-data", text: formatValue(message.data ?? null)})));
  }

  logEvent(entry) {
    if (!this.eventLog) return;
    this.eventLog.prepend(entry);
    while (this.eventLog.childElementCount > EVENT_LOG_SIZE) this.eventLog.lastElementChild.remove();
  }
}

class PropertyView {
  constructor(name, schema, {connection, readonly, thingID}) {
    this.name = name;
    this.schema = schema;
    this.connection = connection;
    this.readonly = readonly;
    this.thingID = thingID;
    this.dirty = false;
    this.connected = false;
    const id = domId("property", name);
    const writable = !schema.readOnly;
    this.value = h("span", {class: "value", dataset: {role: "value"}, text: "—"});
    this.updated = h("time", {class: "updated"});
    const badges = [schema.readOnly ? h("span", {class: "badge", text: "read-only"}) : null,
                    schema.writeOnly ? h("span", {class: "badge", text: "write-only"}) : null];
    this.element = h("article", {class: "card property", dataset: {property: name}, "aria-labelledby": `${id}-title`},
      h("header", {class: "card-header"},
        h("h3", {id: `${id}-title`, text: schema.title || name}),
        schema.title ? h("code", {text: name}) : null, badges),
      schema.description ? description(schema.description) : null,
      schema.writeOnly ? null : h("p", {class: "reading"}, this.value,
        schema.unit ? h("span", {class: "unit", text: ` ${schema.unit}`}) : null),
      schema.writeOnly ? null : this.updated);

    if (writable) {
      this.error = h("p", {class: "error", role: "alert", dataset: {role: "error"}});
      this.done = h("span", {class: "done", "aria-live": "polite"});
      this.control = control(schema, `${id}-input`);
      this.control.focusable.addEventListener("input", () => { this.dirty = true; });
      this.control.focusable.addEventListener("change", () => { this.dirty = true; });
      this.button = h("button", {type: "submit", text: "Set"});
      this.form = h("form", {class: "write", noValidate: true, on: {submit: (e) => this.submit(e)}},
        h("label", {for: `${id}-input`, text: `New ${schema.title || name}`}),
        h("div", {class: "row"}, this.control.element, this.button, this.done),
        this.error);
      this.element.append(this.form);
    }
    if (isNumeric(schema) && !schema.writeOnly) {
      this.plotBox = h("div", {class: "plot", role: "img",
                               "aria-label": `${schema.title || name} over the last five minutes`});
      this.element.append(this.plotBox);
    }
    this.setConnected(false);
  }

  /** In the page: the plot can measure its width now. */
  mounted() {
    if (this.plotBox) this.plot = new LivePlot(this.plotBox, {label: this.schema.title || this.name,
                                                              unit: this.schema.unit});
  }

  destroy() {
    this.plot?.destroy();
  }

  update(value, timestamp) {
    this.value.textContent = formatValue(value);
    this.element.classList.remove("stale");
    if (timestamp) {
      this.updated.dateTime = timestamp;
      this.updated.textContent = `updated ${formatTime(timestamp)}`;
    }
    if (this.control && !this.dirty && document.activeElement !== this.control.focusable) {
      this.control.show(value);
    }
    this.plot?.add(value);
  }

  setConnected(connected) {
    if (this.connected && !connected) {
      this.element.classList.add("stale");
      this.plot?.gap();
    }
    this.connected = connected;
    if (this.control) {
      const disabled = this.readonly || !connected;
      this.control.setDisabled(disabled);
      this.button.disabled = disabled;
    }
  }

  async submit(event) {
    event.preventDefault();
    this.error.textContent = "";
    this.done.textContent = "";
    let value;
    try {
      value = this.control.read();
    } catch (error) {
      this.error.textContent = error.message;
      return;
    }
    if (value === undefined) {
      this.error.textContent = "Enter a value first.";
      return;
    }
    this.button.disabled = true;
    try {
      await this.connection.request("writeproperty", {thingID: this.thingID, name: this.name, value});
      this.dirty = false;
      this.done.textContent = "✓";
    } catch (error) {
      this.error.textContent = error.message;
    } finally {
      this.button.disabled = this.readonly || !this.connected;
    }
  }
}

class ActionView {
  constructor(name, affordance, {connection, readonly, thingID}) {
    this.name = name;
    this.affordance = affordance;
    this.connection = connection;
    this.readonly = readonly;
    this.thingID = thingID;
    this.connected = false;
    this.invocations = [];
    const id = domId("action", name);
    this.fields = inputFields(affordance.input, `${id}-input`);
    this.button = h("button", {type: "submit", text: "Invoke"});
    this.error = h("p", {class: "error", role: "alert", dataset: {role: "error"}});
    this.list = h("ol", {class: "invocations", "aria-label": `Invocations of ${affordance.title || name}, newest first`});
    this.element = h("article", {class: "card action", dataset: {action: name}, "aria-labelledby": `${id}-title`},
      h("header", {class: "card-header"},
        h("h3", {id: `${id}-title`, text: affordance.title || name}),
        affordance.title ? h("code", {text: name}) : null),
      affordance.description ? description(affordance.description) : null,
      h("form", {class: "invoke", noValidate: true, on: {submit: (e) => this.submit(e)}},
        this.fields.element, h("div", {class: "row"}, this.button), this.error),
      this.list);
    this.setConnected(false);
  }

  setConnected(connected) {
    this.connected = connected;
    const disabled = this.readonly || !connected;
    this.fields.setDisabled(this.readonly);
    this.button.disabled = disabled;
    for (const invocation of this.invocations) invocation.setConnected(connected);
  }

  async submit(event) {
    event.preventDefault();
    this.error.textContent = "";
    let input;
    try {
      input = this.fields.read();
    } catch (error) {
      this.error.textContent = error.message;
      return;
    }
    const invocation = new InvocationView(this);
    const members = {thingID: this.thingID, name: this.name};
    if (input !== undefined) members.input = input;
    this.button.disabled = true;
    this.add(invocation);
    try {
      const response = await this.connection.request("invokeaction", members,
                                                     (message) => invocation.update(message.status));
      invocation.update(response.status);
    } catch (error) {
      this.remove(invocation);  // refused: no invocation was made
      this.error.textContent = error.message;
    } finally {
      this.button.disabled = this.readonly || !this.connected;
    }
  }

  add(invocation) {
    this.invocations.unshift(invocation);
    this.list.prepend(invocation.element);
    while (this.invocations.length > INVOCATIONS_SHOWN) {
      const old = this.invocations.findLastIndex((i) => i.ended());
      if (old < 0) break;
      this.invocations.splice(old, 1)[0].element.remove();
    }
  }

  remove(invocation) {
    this.invocations = this.invocations.filter((i) => i !== invocation);
    invocation.element.remove();
  }

  /** The socket reopened: status notifications went with the old one, so ask for them. */
  reconnected() {
    for (const invocation of this.invocations) if (!invocation.ended()) invocation.follow();
  }
}

class InvocationView {
  constructor(action) {
    this.action = action;
    this.id = null;
    this.state = "sending";
    this.lines = [];
    this.stateBadge = h("span", {class: "state badge", dataset: {role: "state"}, text: "sending"});
    this.requested = h("time", {class: "requested"});
    this.cancel = h("button", {type: "button", class: "cancel", text: "Cancel",
                               on: {click: () => this.cancelClicked()}});
    this.log = h("ol", {class: "log", "aria-label": "Log"});
    this.output = h("div", {class: "output", dataset: {role: "output"}, hidden: true});
    this.error = h("p", {class: "error", role: "alert", dataset: {role: "error"}});
    this.element = h("li", {class: "invocation", dataset: {state: "sending"}},
      h("div", {class: "row"}, this.stateBadge, this.requested, this.cancel),
      this.log, this.output, this.error);
    this.setConnected(action.connected);
  }

  ended() {
    return ENDED.has(this.state);
  }

  update(status) {
    if (!status || typeof status !== "object") return;
    if (status.actionID) {
      this.id = status.actionID;
      this.element.dataset.actionId = status.actionID;
    }
    if (Array.isArray(status.log)) {
      const from = Number.isInteger(status.logFrom) ? status.logFrom : 0;
      this.lines.splice(from, this.lines.length - from, ...status.log);
      replace(this.log, this.lines.map((line) => h("li", {class: `level-${String(line.level).toLowerCase()}`},
        h("time", {text: formatTime(line.timestamp)}), " ", h("span", {text: line.message}))));
    }
    if (status.timeRequested && !this.requested.textContent) {
      this.requested.dateTime = status.timeRequested;
      this.requested.textContent = formatTime(status.timeRequested);
    }
    const state = status.state;
    if (state && (STATE_RANK[state] ?? 0) >= (STATE_RANK[this.state] ?? 0)) {
      this.state = state;
      this.stateBadge.textContent = state;
      this.element.dataset.state = state;
    }
    if (this.state === "completed" && status.state === "completed") this.showOutput(status.output);
    if (this.state === "failed" && status.error) {
      this.error.textContent = [status.error.title, status.error.detail].filter(Boolean).join(": ");
    }
    this.setConnected(this.action.connected);
  }

  setConnected(connected) {
    this.cancel.hidden = this.ended();
    this.cancel.disabled = this.action.readonly || !connected || !this.id || this.ended();
  }

  async cancelClicked() {
    this.error.textContent = "";
    this.cancel.disabled = true;
    try {
      await this.action.connection.request("cancelaction", {thingID: this.action.thingID, actionID: this.id});
      if (this.polling) this.follow();
    } catch (error) {
      this.error.textContent = error.message;
      this.setConnected(this.action.connected);
    }
  }

  /** Query the status until it ends: after a reconnect, nothing pushes it any more. */
  follow() {
    if (this.polling || !this.id) return;
    this.polling = true;
    const query = async () => {
      try {
        const response = await this.action.connection.request(
          "queryaction", {thingID: this.action.thingID, actionID: this.id});
        this.update(response.status);
      } catch (error) {
        if (error.status === 404) {
          this.error.textContent = "The server no longer knows this invocation.";
          this.state = "unknown";
          this.stateBadge.textContent = "unknown";
          this.element.dataset.state = "unknown";
          this.cancel.hidden = true;
          this.polling = false;
          return;
        }
        if (!this.action.connection.isOpen()) {
          this.polling = false;  // reconnected() starts again
          return;
        }
      }
      if (this.ended()) this.polling = false;
      else setTimeout(query, QUERY_INTERVAL);
    };
    query();
  }

  showOutput(output) {
    if (this.outputShown) return;
    this.outputShown = true;
    this.output.hidden = false;
    const label = h("span", {class: "output-label", text: "Output: "});
    if (isBlob(output)) {
      replace(this.output, label, blobView(output));
    } else if (output === undefined) {
      replace(this.output, label, h("span", {class: "none", text: "none"}));
    } else {
      const text = typeof output === "object" && output !== null
        ? JSON.stringify(output, null, 2) : formatValue(output);
      replace(this.output, label, h(typeof output === "object" && output !== null ? "pre" : "output",
                                    {dataset: {role: "output-value"}, text}));
    }
  }
}

function isBlob(value) {
  return value !== null && typeof value === "object" && typeof value.href === "string" &&
    typeof value.media_type === "string";
}

/** A blob output: an image inline, anything else as a download. Fetched with the token
 * (an <img src> could send none) and shown from a blob: URL, which the CSP allows. */
function blobView(blob) {
  const mediaType = blob.media_type.split(";")[0].trim().toLowerCase();
  const status = h("span", {class: "blob-status", text: "loading…"});
  const box = h("span", {class: "blob"}, status);
  request(blob.href).then((response) => response.blob()).then((data) => {
    const url = URL.createObjectURL(data);
    if (mediaType.startsWith("image/")) {
      replace(box, h("img", {src: url, alt: `Output (${mediaType})`, class: "blob-image"}));
    } else {
      const name = blob.href.split("/").filter(Boolean).pop() || "output";
      replace(box, h("a", {href: url, download: name, text: `Download (${mediaType}, ${data.size} bytes)`}));
    }
  }).catch((error) => {
    replace(box, h("span", {class: "error", text: `Cannot load the output: ${error.message}`}));
  });
  return box;
}

/**
 * A frame stream (MJPEG) shown live. Without a token, the <img> reads the stream
 * itself (browsers decode multipart/x-mixed-replace); with one, a script reads it with
 * the token in its Authorization header (frames.js), since an <img> can send none.
 */
class StreamView {
  constructor(link, base) {
    this.url = new URL(link.href, base || location.href).href;
    const title = link.title || new URL(this.url).pathname.split("/").filter(Boolean).join(" / ") || "Stream";
    this.status = h("p", {class: "stream-status", role: "status"});
    this.image = h("img", {class: "stream", alt: `${title} (live)`, on: {
      error: () => { if (!this.controller) this.status.textContent = "The stream is unavailable."; },
      load: () => this.shown(),
    }});
    this.element = h("figure", {class: "card stream-card", dataset: {stream: this.url}},
      this.image, h("figcaption", {text: title}), this.status);
    this.objectURL = null;
    this.next = null;
    this.reload();
  }

  /** Stop reading the stream (the page is rebuilt without it). */
  stop() {
    this.controller?.abort();
    this.controller = null;
    this.image.removeAttribute("src");
  }

  /** (Re)start the stream: after a reconnect, the old response ended with the server. */
  reload() {
    this.status.textContent = "";
    this.controller?.abort();
    this.controller = null;
    if (!getToken()) {
      this.image.removeAttribute("src");
      this.image.src = this.url;
      return;
    }
    const controller = new AbortController();
    this.controller = controller;
    readFrames(this.url, (blob) => this.frame(blob), controller.signal).catch((error) => {
      if (!controller.signal.aborted) this.status.textContent = `The stream is unavailable: ${error.message}`;
    });
  }

  /** A frame read by script: shown when the one before has been decoded. */
  frame(blob) {
    if (this.decoding) {
      this.next = blob;  // frames faster than the page decodes them: keep the newest
      return;
    }
    this.decoding = true;
    this.previousURL = this.objectURL;
    this.objectURL = URL.createObjectURL(blob);
    this.image.src = this.objectURL;
  }

  shown() {
    this.status.textContent = "";
    if (!this.decoding) return;
    this.decoding = false;
    if (this.previousURL) URL.revokeObjectURL(this.previousURL);
    this.previousURL = null;
    const next = this.next;
    this.next = null;
    if (next) this.frame(next);
  }
}
