// The playground page: sends the mapping and the request to the local server as they change
// (300 ms after the last keystroke) and shows what it answers. Every check and every run is
// the server's: the same validator and pipeline as `validate` and `dry-run`.
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 300;
const state = { cases: [], samples: [], schema: null, secrets: [], checkSeq: 0, runSeq: 0 };
const SAMPLE_REPLY = {
  text: { text: "Hello!" },
  buttons: { text: "Pick one", buttons: [{ title: "Yes", payload: "/affirm" }, { title: "No", payload: "/deny" }] },
  image: { image: "https://example.com/picture.png" },
  custom: { custom: { kind: "card", title: "A card" } },
};

async function api(method, path, payload) {
  const options = { method, headers: {} };
  if (payload !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(payload);
  }
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function debounced(action) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, DEBOUNCE_MS);
  };
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function pre(value) {
  return element("pre", typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

function fill(id, ...children) {
  $(id).replaceChildren(...children);
}

// --- the request editor -------------------------------------------------------------------

function lines(object, separator) {
  return Object.entries(object || {}).map(([k, v]) => `${k}${separator}${v}`).join("\n");
}

function pairs(text, separator) {
  const found = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf(separator);
    if (at > 0) found[line.slice(0, at).trim()] = line.slice(at + separator.length).trim();
  }
  return found;
}

function envRow(name, value) {
  const row = document.createElement("tr");
  const nameCell = document.createElement("td");
  const nameInput = element("input");
  nameInput.value = name;
  nameInput.className = "env-name";
  nameInput.setAttribute("aria-label", "Variable name");
  nameInput.autocomplete = "off";
  nameCell.append(nameInput);
  const valueCell = document.createElement("td");
  const valueInput = element("input");
  valueInput.value = value;
  valueInput.className = "env-value";
  valueInput.setAttribute("aria-label", `Value of ${name || "the variable"}`);
  valueInput.autocomplete = "off";
  valueInput.dataset.name = name;
  valueCell.append(valueInput);
  row.append(nameCell, valueCell);
  nameInput.addEventListener("input", () => {
    valueInput.setAttribute("aria-label", `Value of ${nameInput.value}`);
    valueInput.dataset.name = nameInput.value;
    markSecrets();
  });
  $("env").tBodies[0].append(row);
  markSecrets();
  return row;
}

function envValues() {
  const found = {};
  for (const row of $("env").tBodies[0].rows) {
    const name = row.querySelector(".env-name").value.trim();
    if (name) found[name] = row.querySelector(".env-value").value;
  }
  return found;
}

function setEnv(names, values) {
  $("env").tBodies[0].replaceChildren();
  const all = [...new Set([...names, ...Object.keys(values || {})])];
  for (const name of all) envRow(name, values && name in values ? String(values[name]) : "");
}

function addEnvNames(names) {
  const present = new Set(Object.keys(envValues()));
  for (const name of names) if (!present.has(name)) envRow(name, "");
}

function markSecrets() {
  for (const input of document.querySelectorAll(".env-value")) {
    const secret = state.secrets.includes(input.dataset.name) ||
      /token|secret|signature|key|auth|password/i.test(input.dataset.name || "");
    input.type = secret ? "password" : "text";
  }
}

function applyCase(shown) {
  const request = shown.request || {};
  $("method").value = request.method || "POST";
  $("path").value = request.path || "/webhook";
  $("headers").value = lines(request.headers, ": ");
  $("query").value = lines(request.query, "=");
  $("body").value = request.body || "";
  $("time").value = shown.time === undefined ? "" : shown.time;
  setEnv(Object.keys(envValues()), shown.env || {});
  $("replies").value = JSON.stringify(shown.replies || [SAMPLE_REPLY.text], null, 2);
  $("fetched").value = shown.fetched ? JSON.stringify(shown.fetched, null, 2) : "";
  $("case-name").value = shown.name ? `${shown.name} (playground)` : "a request from the playground";
  if (shown.error) $("status").textContent = `This test case cannot be run: ${shown.error}`;
}

function parsed(id, fallback) {
  const text = $(id).value.trim();
  if (!text) return fallback;
  return JSON.parse(text);
}

function runPayload() {
  let replies, fetched;
  try {
    replies = parsed("replies", []);
    fetched = parsed("fetched", null);
    $("replies-problem").textContent = "";
  } catch (error) {
    $("replies-problem").textContent = `Not valid JSON: ${error.message}`;
    return null;
  }
  const time = $("time").value.trim();
  return {
    mapping_text: $("mapping").value,
    request: {
      method: $("method").value.trim() || "POST",
      path: $("path").value.trim() || "/webhook",
      headers: pairs($("headers").value, ":"),
      query: pairs($("query").value, "="),
      body: $("body").value,
    },
    env: envValues(),
    replies,
    fetched,
    time: time === "" ? null : Number(time),
  };
}

// --- the findings ---------------------------------------------------------------------------

function moveCaret(line, column) {
  const editor = $("mapping");
  const text = editor.value.split("\n");
  let index = 0;
  for (let i = 0; i < Math.min(line - 1, text.length); i++) index += text[i].length + 1;
  index += Math.max((column || 1) - 1, 0);
  editor.focus();
  editor.setSelectionRange(index, index);
  const height = editor.scrollHeight / Math.max(text.length, 1);
  editor.scrollTop = Math.max((line - 5) * height, 0);
  showCursor();
}

function findingItem(finding, kind) {
  const item = element("li", null, kind);
  const where = finding.line ? `${finding.line}:${finding.column || 1}` : "";
  if (where) {
    const link = element("button", where);
    link.type = "button";
    link.className = "where";
    link.setAttribute("aria-label", `Go to line ${finding.line}, column ${finding.column || 1}`);
    link.addEventListener("click", () => moveCaret(finding.line, finding.column));
    item.append(link, " ");
  }
  const prefix = kind === "warning" ? "warning: " : "";
  const hint = finding.hint ? ` (${finding.hint})` : "";
  item.append(`${prefix}${finding.path}: ${finding.message}${hint}`);
  return item;
}

async function check() {
  const seq = ++state.checkSeq;
  let answer;
  try {
    answer = await api("POST", "/api/check", { mapping_text: $("mapping").value });
  } catch (error) {
    $("check-summary").textContent = `The check failed: ${error.message}`;
    return;
  }
  if (seq !== state.checkSeq) return;
  const tests = answer.tests;
  const count = answer.findings.length;
  $("check-summary").textContent = answer.valid
    ? `Valid: ${tests.passed} test case(s) passed.` +
      (answer.warnings.length ? ` ${answer.warnings.length} warning(s).` : "")
    : `${count} finding(s)` + (tests.failed ? `; ${tests.failed} test case(s) failed.` : ".");
  fill("findings",
    ...answer.findings.map((f) => findingItem(f, "error")),
    ...answer.warnings.map((f) => findingItem(f, "warning")));
  if (answer.env.length) {
    state.secrets = answer.secrets;
    addEnvNames(answer.env);
    markSecrets();
  }
}

// --- the result -------------------------------------------------------------------------------

function outcome(text, kind) {
  return element("span", text, `outcome ${kind}`);
}

function definitions(entries) {
  const list = element("dl");
  for (const [term, value] of entries) {
    list.append(element("dt", term),
      element("dd", typeof value === "string" ? value : JSON.stringify(value)));
  }
  return list;
}

function stage(result, name) {
  return (result.stages || []).find((s) => s.stage === name);
}

function renderStage(id, found, goodWords) {
  if (!found) {
    fill(id, element("p", "not reached"));
    return;
  }
  const kind = goodWords.includes(found.outcome) ? "good" : found.outcome === "none" ? "none" : "bad";
  const line = element("p");
  line.append(outcome(found.outcome, kind), ` — ${found.detail}`);
  fill(id, line);
}

function render(result) {
  if (result.invalid) {
    $("status").textContent = "The mapping is not valid: see its findings.";
    for (const id of ["auth", "handshake", "events", "messages", "answer", "outbound"]) fill(id);
    return;
  }
  const refused = "error" in result;
  $("status").textContent = `Status ${result.status}` + (refused ? " — refused" : "");
  renderStage("auth", stage(result, "auth"), ["passed"]);
  renderStage("handshake", stage(result, "handshake"), ["answered"]);
  const events = element("div");
  if (!refused && !result.handshake) {
    events.append(element("p", stage(result, "events").detail));
    if ((result.ignored || []).length) {
      const list = element("ul");
      for (const rule of result.ignored) list.append(element("li", `ignored by rule: ${rule}`));
      events.append(list);
    }
  }
  fill("events", events);
  const messages = (result.messages || []).map((m, i) => {
    const block = element("div", null, "message");
    block.append(element("h4", `Message ${i + 1}`), definitions([
      ["sender", m.sender], ["text", m.text], ["input_channel", m.input_channel],
      ["message_id", m.message_id === null ? "null" : m.message_id],
    ]), element("p", "metadata"), pre(m.metadata));
    return block;
  });
  fill("messages", ...(messages.length ? messages : [element("p", "none")]));
  const answer = [];
  if (refused) {
    answer.push(definitions([["status", String(result.status)], ["error", result.error]]));
    if (result.reason) answer.push(element("p", `Reason (what the server logs): ${result.reason}`, "reason"));
  } else if (result.response) {
    const response = result.response;
    answer.push(definitions([["status", String(result.status)], ["Content-Type", response.content_type]]));
    if (Object.keys(response.headers).length) answer.push(pre(response.headers));
    answer.push(pre(response.body));
    if (result.problem) answer.push(element("p", `The answer could not be rendered: ${result.problem}`, "problem"));
  }
  fill("answer", ...answer);
  const outbound = (result.outbound || []).map((r, i) => {
    const block = element("div", null, "request");
    block.append(element("h4", `${i + 1}. ${r.kind}: ${r.method} ${r.url || ""}`));
    if (r.not_shown) block.append(element("p", r.not_shown));
    if (r.headers) block.append(pre(r.headers));
    if (r.body !== undefined) block.append(pre(r.body));
    if (!r.allowed) block.append(element("p", "not allowed by allow_hosts: not sent", "problem"));
    return block;
  });
  for (const problem of result.outbound_problems || []) outbound.push(element("p", problem, "problem"));
  fill("outbound", ...(outbound.length ? outbound : [element("p", "none")]));
}

async function run() {
  const payload = runPayload();
  if (payload === null) return;
  const seq = ++state.runSeq;
  try {
    const result = await api("POST", "/api/run", payload);
    if (seq === state.runSeq) render(result);
  } catch (error) {
    if (seq === state.runSeq) $("status").textContent = `The request could not be run: ${error.message}`;
  }
}

// --- completion -------------------------------------------------------------------------------

function resolve(node) {
  const seen = new Set();
  while (node && node.$ref && !seen.has(node.$ref)) {
    seen.add(node.$ref);
    node = node.$ref.split("/").slice(1).reduce((n, part) => (n ? n[part] : undefined), state.schema);
  }
  return node || {};
}

function keysOf(node) {
  node = resolve(node);
  const keys = new Set(Object.keys(node.properties || {}));
  for (const part of [...(node.anyOf || []), ...(node.oneOf || []), ...(node.allOf || [])]) {
    for (const key of keysOf(part)) keys.add(key);
  }
  return [...keys];
}

function child(node, step) {
  node = resolve(node);
  const options = [node, ...(node.anyOf || []), ...(node.oneOf || []), ...(node.allOf || [])].map(resolve);
  for (const option of options) {
    if (step === "[]" && option.items) return option.items;
    if (step !== "[]" && option.properties && step in option.properties) return option.properties[step];
  }
  return null;
}

// The key path at the caret, from the indentation of the lines above (block-style YAML).
function pathAtCaret() {
  const editor = $("mapping");
  const before = editor.value.slice(0, editor.selectionStart).split("\n");
  const current = before[before.length - 1];
  let level = current.length - current.trimStart().length;
  const dash = /^(\s*)- /.exec(current);
  const path = [];
  if (dash) {
    path.unshift("[]");
    level = dash[1].length;
  }
  for (let i = before.length - 2; i >= 0 && level > 0; i--) {
    const line = before[i];
    const match = /^(\s*)(- +)?([^\s#:'"][^:#]*?|"[^"]*"|'[^']*'):(\s|$)/.exec(line);
    if (!match) continue;
    const indent = match[1].length;
    const keyIndent = indent + (match[2] ? match[2].length : 0);
    const key = match[3].replace(/^["']|["']$/g, "");
    if (keyIndent < level) {
      path.unshift(key);
      if (match[2]) path.unshift("[]");
      level = match[2] ? indent : keyIndent;
    } else if (match[2] && keyIndent === level) {
      path.unshift("[]");
      level = indent;
    }
  }
  return path;
}

function showCursor() {
  const editor = $("mapping");
  const before = editor.value.slice(0, editor.selectionStart).split("\n");
  const path = pathAtCaret();
  const where = `Line ${before.length}, column ${before[before.length - 1].length + 1}`;
  $("cursor-path").textContent = `${where}; key path: ${path.join(".").replace(/\.\[\]/g, "[]") || "(top level)"}`;
  if (!state.schema) return;
  let node = state.schema;
  for (const step of path) {
    node = node && child(node, step);
  }
  const keys = node ? keysOf(node) : [];
  fill("suggestions", ...keys.sort().map((key) => {
    const item = element("li");
    const button = element("button", key);
    button.type = "button";
    button.setAttribute("aria-label", `Write the key ${key}`);
    button.addEventListener("mousedown", (event) => event.preventDefault());
    button.addEventListener("click", () => insertKey(key));
    item.append(button);
    return item;
  }));
}

function insertKey(key) {
  const editor = $("mapping");
  const at = editor.selectionStart;
  const text = `${key}: `;
  editor.setRangeText(text, at, editor.selectionEnd, "end");
  editor.focus();
  editor.dispatchEvent(new Event("input", { bubbles: true }));
}

// --- actions ----------------------------------------------------------------------------------

function addReply(kind) {
  let replies;
  try {
    replies = parsed("replies", []);
  } catch (error) {
    $("replies-problem").textContent = `Not valid JSON: ${error.message}`;
    return;
  }
  replies.push(SAMPLE_REPLY[kind]);
  $("replies").value = JSON.stringify(replies, null, 2);
  scheduleRun();
}

async function addCase() {
  const payload = runPayload();
  if (payload === null) return;
  payload.name = $("case-name").value;
  try {
    const answer = await api("POST", "/api/case", payload);
    $("mapping").value = answer.mapping_text;
    $("case-status").textContent = `Added the test case “${answer.case.name}” to the mapping (not saved yet).`;
    scheduleCheck();
  } catch (error) {
    $("case-status").textContent = `Not added: ${error.message}`;
  }
}

async function save() {
  try {
    const answer = await api("POST", "/api/save", { mapping_text: $("mapping").value });
    $("save-status").textContent = `Saved to ${answer.saved}.`;
  } catch (error) {
    $("save-status").textContent = `Not saved: ${error.message}`;
  }
}

async function loadCaptured(file) {
  try {
    const text = await file.text();
    const shown = await api("POST", "/api/request", { mapping_text: $("mapping").value, case: JSON.parse(text) });
    applyCase(shown);
    scheduleRun();
  } catch (error) {
    $("status").textContent = `That file is not a captured request: ${error.message}`;
  }
}

const scheduleRun = debounced(run);
const scheduleCheck = debounced(() => { check(); run(); });

async function start() {
  const [cases, schema] = await Promise.all([api("GET", "/api/cases"), api("GET", "/api/schema")]);
  state.cases = cases.cases;
  state.schema = schema;
  $("file-line").textContent = `File: ${cases.file.split("/").pop()}`;
  $("file-line").title = cases.file;
  $("mapping").value = cases.text;
  const select = $("case");
  select.replaceChildren(element("option", "(a request of your own)"));
  select.options[0].value = "";
  state.cases.forEach((shown, index) => {
    const option = element("option", shown.label);
    option.value = String(index);
    select.append(option);
  });
  if (state.cases.length) {
    select.value = "0";
    applyCase(state.cases[0]);
  } else {
    $("body").value = "{}";
    $("replies").value = JSON.stringify([SAMPLE_REPLY.text], null, 2);
  }
  select.addEventListener("change", () => {
    if (select.value !== "") applyCase(state.cases[Number(select.value)]);
    run();
  });
  $("mapping").addEventListener("input", () => { showCursor(); scheduleCheck(); });
  for (const event of ["keyup", "click", "focus"]) $("mapping").addEventListener(event, showCursor);
  for (const id of ["method", "path", "headers", "query", "body", "time", "replies", "fetched"]) {
    $(id).addEventListener("input", scheduleRun);
  }
  $("env").addEventListener("input", scheduleRun);
  $("add-env").addEventListener("click", () => envRow("", "").querySelector("input").focus());
  for (const button of document.querySelectorAll("[data-reply]")) {
    button.addEventListener("click", () => addReply(button.dataset.reply));
  }
  $("add-case").addEventListener("click", addCase);
  $("save").addEventListener("click", save);
  $("captured").addEventListener("change", (event) => {
    if (event.target.files.length) loadCaptured(event.target.files[0]);
  });
  showCursor();
  await check();
  await run();
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((error) => { $("status").textContent = `The playground could not start: ${error.message}`; });
});
