// The linebus dashboard: one live stream of the line's state (/ui/stream, Server-Sent Events)
// drawn into the page, and a command console that calls through the HTTP gateway (/api/*).
// Plain ES module, no build step; plots with the vendored uPlot (window.uPlot).

const $ = (id) => document.getElementById(id);

const state = {
  actors: new Map(),   // name -> {name, kind, state, since, restarts, pid, reason}
  actorTimers: new Map(),  // name -> the timer that will show a held-back change
  devices: new Map(),  // service/uuid -> metadata + status
  jobs: new Map(),     // id -> {service, command, done, total, channels, state, outcome}
  streams: new Map(),  // key -> {key, points: [[ts, {field: value}]], plot, fields, zoomed}
  events: [],          // newest last
  counters: {},
  clockOffset: 0,      // server time - browser time, seconds
  paused: false,
};

const MAX_EVENTS = 300;
// A restart can bring an actor's "down" and "up" in one batch (the new process registered
// before its predecessor's death was noticed): red stays at least this long, so it is seen.
const MIN_DOWN_MS = 1000;
const MAX_POINTS = 5000;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"];

// For tests and the curious: the page's state and its plots.
window.linebus = { state, plots: () => new Map([...state.streams].map(([k, s]) => [k, s.plot])) };

// ------------------------------------------------------------------ the live stream

let source = null;

// The stream carries the token as a query parameter (EventSource cannot send headers); a
// gateway with tokens answers 401 without one, and the page shows "reconnecting" until the
// token is entered.
function connect() {
  if (source) source.close();
  source = new EventSource("ui/stream" + (token() ? "?access_token=" + encodeURIComponent(token()) : ""));
  source.addEventListener("snapshot", (msg) => applySnapshot(JSON.parse(msg.data)));
  source.addEventListener("changes", (msg) => JSON.parse(msg.data).forEach(applyChange));
  source.onopen = () => setConnection(true);
  // EventSource reconnects by itself, except after an HTTP error (401 without a valid token).
  source.onerror = () => setConnection(false, source.readyState === EventSource.CLOSED);
}

function setConnection(up, refused = false) {
  const badge = $("connection");
  badge.textContent = up ? "live" : refused ? "no access: enter the token below" : "reconnecting";
  badge.className = "badge " + (up ? "up" : "down");
}

function applySnapshot(snap) {
  state.clockOffset = snap.now - Date.now() / 1000;
  for (const timer of state.actorTimers.values()) clearTimeout(timer);
  state.actorTimers.clear();
  state.actors = new Map(snap.actors.map((a) => [a.name, a]));
  state.devices = new Map(snap.devices.map((d) => [d.service + "/" + d.uuid, d]));
  state.jobs = new Map(snap.jobs.map((j) => [j.id, j]));
  for (const s of state.streams.values()) if (s.plot) s.plot.destroy();
  state.streams = new Map();
  $("plots").replaceChildren();
  snap.streams.forEach(setStream);
  state.events = snap.events.slice(-MAX_EVENTS);
  state.counters = snap.counters;
  renderActors(); renderDevices(); renderJobs(); renderEvents(); renderCounters(); fillServices();
}

function applyChange(change) {
  switch (change.type) {
    case "actor":
      showActor(change.actor);
      break;
    case "device":
      state.devices.set(change.device.service + "/" + change.device.uuid, change.device);
      renderDevices();
      break;
    case "job":
      state.jobs.set(change.job.id, change.job);
      renderJob(change.job);
      break;
    case "job_removed":
      state.jobs.delete(change.id);
      document.querySelector(`.job[data-id="${CSS.escape(change.id)}"]`)?.remove();
      renderJobs();
      break;
    case "stream":
      setStream(change.stream);
      break;
    case "readings":
      addPoints(change.stream, change.points);
      break;
    case "event":
      state.events.push(change.event);
      if (state.events.length > MAX_EVENTS) state.events.shift();
      prependEvent(change.event);
      break;
    case "counters":
      state.counters = change.counters;
      renderCounters();
      break;
  }
}

const serverNow = () => Date.now() / 1000 + state.clockOffset;

// ------------------------------------------------------------------ the line

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function duration(seconds) {
  if (!(seconds >= 0)) return "";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// An actor's change, held back while a "down" it replaces has been shown for less than
// MIN_DOWN_MS (a newer change of the same actor replaces the one held back).
function showActor(actor) {
  clearTimeout(state.actorTimers.get(actor.name));
  state.actorTimers.delete(actor.name);
  const shown = state.actors.get(actor.name);
  if (shown?.state === "down" && actor.state !== "down") {
    const wait = MIN_DOWN_MS - (Date.now() - shown.shownDownAt);
    if (wait > 0) {
      state.actorTimers.set(actor.name, setTimeout(() => showActor(actor), wait));
      return;
    }
  }
  if (actor.state === "down") {
    actor.shownDownAt = shown?.state === "down" ? shown.shownDownAt : Date.now();
  }
  state.actors.set(actor.name, actor);
  renderActors(); fillServices();
}

function renderActors() {
  const rows = [...state.actors.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("actors").tBodies[0].replaceChildren(...rows.map((a) => el("tr",
    { className: "actor state-" + a.state, dataset: { name: a.name, state: a.state } },
    el("td", {}, a.name),
    el("td", {}, a.kind || ""),
    el("td", {}, el("span", { className: "badge " + a.state, title: a.reason || "" }, a.state)),
    el("td", { className: "uptime", dataset: { since: a.since ?? "" } }, ""),
    el("td", {}, String(a.restarts ?? 0)),
    el("td", {}, a.pid == null ? "" : String(a.pid)),
  )));
  tickUptimes();
}

function tickUptimes() {
  const now = serverNow();
  for (const cell of document.querySelectorAll("#actors .uptime")) {
    const up = cell.parentElement.dataset.state === "up";
    const since = parseFloat(cell.dataset.since);
    cell.textContent = up && since ? duration(now - since) : (since ? "down " + duration(now - since) : "");
  }
}

function renderDevices() {
  const rows = [...state.devices.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
  $("no-devices").hidden = rows.length > 0;
  $("devices").tBodies[0].replaceChildren(...rows.map((d) => el("tr",
    { className: "device status-" + d.status, dataset: { uuid: d.uuid, status: d.status } },
    el("td", {}, d.name || ""),
    el("td", { title: d.uuid }, d.uuid.slice(0, 8) + "…"),
    el("td", {}, d.model_id || d.model || ""),
    el("td", {}, d.ipaddr || ""),
    el("td", {}, el("span", { className: "badge " + (d.status === "gone" ? "down" : "up") }, d.status)),
    el("td", {}, d.st_label || ""),
  )));
}

function renderCounters() {
  const c = state.counters || {};
  const sum = (m) => Object.values(m || {}).reduce((a, b) => a + b, 0);
  const dropped = Object.entries(c.dropped || {}).filter(([, n]) => n > 0);
  $("counters").replaceChildren(
    el("span", { id: "routed", title: JSON.stringify(c.routed || {}) }, `routed ${sum(c.routed)}`),
    " · ",
    el("span", { id: "dropped", className: dropped.length ? "warn" : "",
      title: dropped.map(([r, n]) => `${r}: ${n}`).join("\n") || "nothing dropped" },
      `dropped ${sum(c.dropped)}`),
    ...dropped.map(([r, n]) => el("span", { className: "muted" }, ` (${r} ${n})`)),
  );
  $("unlisted").textContent = c.unlisted
    ? `${c.unlisted} events arrived too fast to be listed (at most ${c.listed_per_s} a second are)` : "";
}

// ------------------------------------------------------------------ jobs

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
const count = (n) => (n >= 10000 ? compact.format(n) : String(n));

function renderJobs() {
  $("no-jobs").hidden = state.jobs.size > 0;
  for (const job of state.jobs.values()) renderJob(job);
}

function renderJob(job) {
  $("no-jobs").hidden = true;
  let box = document.querySelector(`.job[data-id="${CSS.escape(job.id)}"]`);
  if (!box) {
    box = el("div", { className: "job", dataset: { id: job.id } });
    $("jobs").prepend(box);
  }
  box.dataset.state = job.state;
  const bar = el("progress", { className: "job-progress" });
  if (job.total > 0) { bar.max = job.total; bar.value = job.done ?? 0; }
  if (job.state !== "running" && job.state !== undefined && !(job.total > 0)) { bar.max = 1; bar.value = 1; }
  const channels = Object.entries(job.channels || {}).sort(([a], [b]) => a - b).map(([c, passed]) =>
    el("span", { className: "channel " + (passed ? "passed" : "failed"), dataset: { channel: c } },
      `ch ${c} ${passed ? "passed" : "failed"}`));
  const label = job.total > 0
    ? `${Math.floor((100 * (job.done ?? 0)) / job.total)} %  (${count(job.done ?? 0)} of ${count(job.total)})` : "";
  box.replaceChildren(
    el("div", { className: "job-title" },
      el("strong", {}, job.service), " ", job.command || "", job.project ? ` ${job.project}` : "",
      job.detail ? el("span", { className: "muted" }, ` ${job.detail}`) : ""),
    el("div", { className: "job-bar" }, bar, el("span", { className: "job-count" }, label)),
    el("div", { className: "channels" }, ...channels),
    el("div", { className: "outcome " + (job.state || "") }, job.outcome || job.state || ""),
  );
}

// ------------------------------------------------------------------ telemetry plots

function setStream(stream) {
  const existing = state.streams.get(stream.key);
  if (existing) {
    existing.points = stream.points.slice(-MAX_POINTS);
    existing.dirty = true;
    return;
  }
  const s = { key: stream.key, points: stream.points.slice(-MAX_POINTS), fields: [], plot: null,
    zoomed: false, dirty: true };
  state.streams.set(stream.key, s);
  $("no-plots").hidden = true;
  $("plots").append(el("div", { className: "plot-box", dataset: { stream: s.key } },
    el("h4", {}, s.key), el("div", { className: "plot" })));
}

function addPoints(key, points) {
  let s = state.streams.get(key);
  if (!s) { setStream({ key, points: [] }); s = state.streams.get(key); }
  s.points.push(...points);
  if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
  s.dirty = true;
}

// Seconds without a reading after which the plot's lines break instead of joining the points.
const GAP_S = 10;

function plotData(s, fields) {
  const windowS = parseFloat($("window").value);
  const from = serverNow() - windowS;
  const shown = [];
  for (const p of s.points) {
    if (p[0] < from) continue;
    const last = shown.at(-1);
    if (last && p[0] - last[0] > GAP_S) shown.push([last[0] + GAP_S / 2, {}]); // a break
    shown.push(p);
  }
  return [shown.map((p) => p[0]), ...fields.map((f) => shown.map((p) => p[1][f] ?? null))];
}

function makePlot(s, fields) {
  if (s.plot) s.plot.destroy();
  const box = document.querySelector(`.plot-box[data-stream="${CSS.escape(s.key)}"] .plot`);
  const width = Math.max(300, box.clientWidth || 600);
  s.plot = new uPlot({
    width, height: 220,
    cursor: { drag: { x: true, y: false } },
    series: [{}, ...fields.map((f, i) => ({ label: f, stroke: COLOURS[i % COLOURS.length], width: 1.5 }))],
    hooks: { setSelect: [(u) => { if (u.select.width > 0) s.zoomed = true; }] },
  }, plotData(s, fields), box);
  box.ondblclick = () => { s.zoomed = false; s.dirty = true; };
  s.fields = fields;
}

function drawPlots() {
  if (state.paused) return;
  for (const s of state.streams.values()) {
    if (!s.dirty || s.zoomed) continue;
    s.dirty = false;
    const fields = [...new Set(s.points.flatMap((p) => Object.keys(p[1])))].sort();
    if (!s.plot || fields.join() !== s.fields.join()) makePlot(s, fields);
    else s.plot.setData(plotData(s, fields));
  }
}

$("pause").onclick = () => {
  state.paused = !state.paused;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(state.paused));
};
$("window").onchange = () => { for (const s of state.streams.values()) { s.dirty = true; s.zoomed = false; } };

// ------------------------------------------------------------------ events

function eventLine(e) {
  const time = new Date(e.ts * 1000).toLocaleTimeString();
  return el("li", { className: "event", dataset: { topic: e.topic } },
    el("span", { className: "muted" }, time), " ",
    el("span", { className: "topic" }, e.topic), " ",
    el("code", {}, JSON.stringify(e.data)));
}

const topicFilter = () => $("topic-filter").value.trim();

function renderEvents() {
  const prefix = topicFilter();
  const shown = state.events.filter((e) => e.topic.startsWith(prefix)).slice(-100).reverse();
  $("events").replaceChildren(...shown.map(eventLine));
}

function prependEvent(e) {
  if (!e.topic.startsWith(topicFilter())) return;
  const list = $("events");
  list.prepend(eventLine(e));
  while (list.children.length > 100) list.lastChild.remove();
}

$("topic-filter").oninput = renderEvents;

// ------------------------------------------------------------------ the command console

const token = () => $("token").value.trim();
$("token").value = sessionStorage.getItem("linebus-token") || "";
$("token").onchange = () => {
  sessionStorage.setItem("linebus-token", token());
  connect();
  loadDescription();
};

function headers(extra = {}) {
  return token() ? { ...extra, Authorization: "Bearer " + token() } : extra;
}

let description = null;

function fillServices() {
  const select = $("service");
  const current = select.value;
  const names = [...state.actors.values()].filter((a) => a.state === "up").map((a) => a.name).sort();
  if (names.join() === [...select.options].map((o) => o.value).join()) return;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(current)) select.value = current;
  else if (names.length) loadDescription();
}

async function loadDescription() {
  const service = $("service").value;
  description = null;
  $("command").replaceChildren();
  if (!service) return;
  const response = await fetch(`api/services/${encodeURIComponent(service)}`, { headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { showError(body.error ? body : { code: "http_" + response.status, message: response.statusText }); return; }
  if ($("service").value !== service) return; // another service was picked meanwhile
  description = body;
  const commands = Object.keys(body.commands || {}).sort();
  $("command").replaceChildren(...commands.map((c) => el("option", { value: c }, c)));
  buildForm();
}

function buildForm() {
  const spec = description?.commands?.[$("command").value];
  $("command-doc").textContent = spec ? spec.doc + (spec.privileged ? " (privileged)" : "") : "";
  $("args").replaceChildren(...(spec?.args || []).map((arg) => el("label", { className: "arg" },
    el("span", { className: "arg-name" }, arg.name + (arg.required ? " *" : "")),
    el("input", {
      name: arg.name, dataset: { type: arg.type }, required: arg.required, size: 30,
      placeholder: arg.type,
      value: "default" in arg && arg.default !== null ? (typeof arg.default === "string" ? arg.default : JSON.stringify(arg.default)) : "",
    }),
    el("span", { className: "muted" }, arg.type + ("default" in arg ? ` = ${JSON.stringify(arg.default)}` : "")),
  )));
  clearOutcome();
}

$("service").onchange = loadDescription;
$("command").onchange = buildForm;

// An argument's text: JSON where it parses (numbers, lists, true, null ...), else the text
// itself; a `str` argument is always the text (as `linebus call` reads key=value).
function argValue(input) {
  const text = input.value;
  if (input.dataset.type === "str") return text;
  try { return JSON.parse(text); } catch { return text; }
}

function clearOutcome() {
  $("call-result").hidden = true;
  $("call-error").hidden = true;
  $("call-progress").hidden = true;
  $("call-progress-text").textContent = "";
}

function showProgress(update) {
  const bar = $("call-progress");
  bar.hidden = false;
  if (update && update.total > 0) { bar.max = update.total; bar.value = update.done ?? 0; }
  else bar.removeAttribute("value");
  $("call-progress-text").textContent = JSON.stringify(update);
}

function showResult(result) {
  const out = $("call-result");
  out.hidden = false;
  out.textContent = JSON.stringify(result, null, 2);
  $("call-progress").hidden = true;
}

function showError(error) {
  const out = $("call-error");
  const e = error?.error ?? error ?? {};
  out.hidden = false;
  out.dataset.code = e.code || "";
  out.textContent = `${e.code || "error"}: ${e.message || JSON.stringify(e)}` +
    (e.details && Object.keys(e.details).length ? "\n" + JSON.stringify(e.details, null, 2) : "");
  $("call-progress").hidden = true;
}

// Read a text/event-stream response body, calling onEvent(name, data) per event.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

$("console").onsubmit = async (submit) => {
  submit.preventDefault();
  clearOutcome();
  const service = $("service").value, command = $("command").value;
  if (!service || !command) return;
  const args = {};
  for (const input of $("args").querySelectorAll("input")) {
    if (input.value === "" && !input.required) continue;
    args[input.name] = argValue(input);
  }
  const spec = description?.commands?.[command];
  const streaming = Boolean(spec?.progress);
  $("call").disabled = true;
  try {
    const response = await fetch(`api/call/${encodeURIComponent(service)}/${encodeURIComponent(command)}`, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: streaming ? "text/event-stream" : "application/json" }),
      body: JSON.stringify(args),
    });
    if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      showProgress(null);
      await readEvents(response, (name, data) => {
        if (name === "progress") showProgress(data);
        else if (name === "result") showResult(data.result);
        else if (name === "error") showError(data);
      });
    } else {
      const body = await response.json().catch(() => ({}));
      if (response.ok) showResult(body.result);
      else showError(body.error ? body : { code: "http_" + response.status, message: response.statusText });
    }
  } catch (failure) {
    showError({ code: "network", message: String(failure) });
  } finally {
    $("call").disabled = false;
  }
};

// ------------------------------------------------------------------ start

connect();
setInterval(tickUptimes, 1000);
setInterval(drawPlots, 250);
