// The list of the Things the server serves: /, /dashboard/.

import {getJSON} from "./api.js";
import {h, replace} from "./dom.js";

/** The first paragraph of a description: the list shows a summary. */
function summary(text) {
  return String(text).split(/\n\s*\n/)[0].replace(/\s+/g, " ").trim();
}

function count(n, singular, plural = `${singular}s`) {
  return `${n} ${n === 1 ? singular : plural}`;
}

export function thingPath(name) {
  return `/dashboard/things/${encodeURIComponent(name)}`;
}

export async function renderList({main, connection, onError}) {
  document.title = "Things · trio-things";
  const list = h("ul", {class: "thing-list", "aria-label": "Things"});
  replace(main, h("h1", {text: "Things"}), list);

  const load = async () => {
    const descriptions = await getJSON("/thing_descriptions/");
    const entries = Object.entries(descriptions);
    replace(list, entries.length === 0
      ? h("li", {class: "empty", text: "This server serves no Things."})
      : entries.map(([name, td]) => {
        const properties = Object.keys(td.properties || {}).length;
        const actions = Object.keys(td.actions || {}).length;
        const events = Object.keys(td.events || {}).length;
        const streams = (Array.isArray(td.links) ? td.links : []).filter(
          (link) => String(link?.type || "").startsWith("multipart/x-mixed-replace")).length;
        return h("li", {class: "card thing-card", dataset: {thing: name}},
          h("h2", {}, h("a", {href: thingPath(name), text: td.title || name})),
          td.description ? h("p", {class: "description", text: summary(td.description)}) : null,
          h("p", {class: "meta"},
            h("code", {text: name}), " · ",
            [count(properties, "property", "properties"),
             count(actions, "action"), count(events, "event"),
             streams ? count(streams, "stream") : null].filter(Boolean).join(", ")));
      }));
  };

  await load();
  let opened = false;
  connection.onOpen(() => {
    if (opened) load().catch(onError);  // the server may have restarted with other Things
    opened = true;
  });
}
