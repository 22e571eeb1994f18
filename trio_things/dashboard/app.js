// The dashboard: routes by location.pathname, keeps the connection state in view, and
// asks for a token when the server wants one.
//
//   /, /dashboard/              the Things the server serves
//   /dashboard/things/<name>    one Thing, from its Thing Description

import * as api from "./api.js";
import {Connection, describeState} from "./connection.js";
import {h, replace} from "./dom.js";
import {renderThing} from "./thing.js";
import {renderList} from "./things.js";

const main = document.getElementById("main");
const connectionStatus = document.getElementById("connection");
const roleBadge = document.getElementById("role");
const forgetButton = document.getElementById("forget-token");

const connection = new Connection(api.socketURL);
let locked = false;  // the token prompt is up: the page waits for a token

function route(pathname) {
  const path = pathname.replace(/\/+$/, "") || "/";
  if (path === "/" || path === "/dashboard") return {page: "list"};
  const match = /^\/dashboard\/things\/([^/]+)$/.exec(path);
  if (match) {
    try {
      return {page: "thing", name: decodeURIComponent(match[1])};
    } catch {
      return {page: "missing"};
    }
  }
  return {page: "missing"};
}

function showState(state) {
  if (locked) return;
  connectionStatus.textContent = describeState(state);
  connectionStatus.dataset.state = state.state;
}

/** Any failure of a page: a 401 asks for a token, anything else is shown. */
function failed(error) {
  if (error instanceof api.Unauthorized) {
    promptForToken(error);
    return;
  }
  // The server went away mid-request: the page asks again once it is back.
  if (error && error.name === "NotConnected") return;
  if (!connection.isOpen() && error instanceof TypeError) return;
  console.error(error);
  showProblem(error.message || String(error));
}

function showProblem(message) {
  let box = document.getElementById("problem");
  if (!box) {
    box = h("p", {id: "problem", class: "problem", role: "alert"});
    main.prepend(box);
  }
  box.textContent = message;
}

function promptForToken(reason) {
  if (locked) return;
  locked = true;
  connection.stop();
  connectionStatus.textContent = "not connected: a token is needed";
  connectionStatus.dataset.state = "locked";
  const given = api.getToken();
  const input = h("input", {id: "token", name: "token", type: "password", autocomplete: "off",
                            required: true, spellcheck: "false", "aria-describedby": "token-error"});
  const error = h("p", {id: "token-error", class: "error", role: "alert",
                        text: given ? "The token was refused." : ""});
  const button = h("button", {type: "submit", text: "Continue"});
  const form = h("form", {class: "card token-form", noValidate: true, on: {submit: async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a token.";
      return;
    }
    button.disabled = true;
    api.setToken(token);
    try {
      await api.role();
      location.reload();  // start again with the token
    } catch (problem) {
      api.setToken(null);
      error.textContent = problem instanceof api.Unauthorized ? "The token was refused."
        : `Cannot check the token: ${problem.message}`;
      button.disabled = false;
      input.focus();
    }
  }}},
  h("h1", {text: "Access token"}),
  h("p", {text: "This server requires an access token. It is kept in this tab only " +
               "(sessionStorage) and sent with every request to this server."}),
  reason && reason.message && !given ? h("p", {class: "hint", text: reason.message}) : null,
  h("label", {for: "token", text: "Token"}),
  h("div", {class: "row"}, input, button),
  error);
  replace(main, form);
  input.focus();
}

async function start() {
  forgetButton.hidden = !api.getToken();
  forgetButton.addEventListener("click", () => {
    api.setToken(null);
    location.reload();
  });
  connection.onState(showState);
  connection.onOpen(() => document.getElementById("problem")?.remove());
  // An attempt refused before the socket opened: perhaps the token no longer counts.
  connection.onFailure(() => {
    if (locked) return;
    api.role().catch((error) => {
      if (error instanceof api.Unauthorized) promptForToken(error);  // else: the server is away
    });
  });

  let role;
  try {
    role = await api.role();
  } catch (error) {
    if (error instanceof api.Unauthorized) {
      promptForToken(error);
      return;
    }
    replace(main, h("p", {class: "problem", role: "alert",
      text: `Cannot reach the server (${error.message}); the page loads again when it is back.`}));
    connection.onOpen(() => location.reload());
    connection.start();
    return;
  }
  if (role === "readonly") {
    roleBadge.textContent = "read-only";
    roleBadge.hidden = false;
  }
  const context = {main, connection, readonly: role === "readonly", onError: failed};
  const where = route(location.pathname);
  try {
    if (where.page === "list") await renderList(context);
    else if (where.page === "thing") await renderThing(context, where.name);
    else {
      document.title = "Not found · trio-things";
      replace(main, h("h1", {text: "Not found"}),
        h("p", {}, "No page here. ", h("a", {href: "/dashboard/", text: "The Things"}), "."));
    }
  } catch (error) {
    failed(error);
    if (locked) return;
  }
  connection.start();
}

start();
