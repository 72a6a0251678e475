// The browser client's page: projects, trainers, prediction and teaching, statistics and
// downloads (docs/browser.md). Everything it loads is served by the project: no CDN, no build.
//
// The master's URL: ?master=ws://HOST:PORT, else "master_url" of /config.json (served by the
// data server when it is told the master's URL), else ws://<this page's host>:8000.
// ?project=NAME selects a project.

import { initDesign } from "./design.js";
import { drawChart } from "./lib/chart.js";
import { convert, decodeFile } from "./lib/image.js";
import { MasterLink, operatorRequest } from "./lib/master.js";
import { reachable, sameServer } from "./lib/protocol.js";
import { Tracker } from "./lib/tracker.js";
import { WorkerPool } from "./lib/trainers.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);

// -- tokens: kept in this tab's sessionStorage only, never in a URL the page keeps ---------------
// A join link (?project=P&join=TOKEN) or a contributor link (?contribute=TOKEN) is read once,
// then removed from the address bar (and the history entry) with history.replaceState.
const tokens = {
  _get(kind) { try { return JSON.parse(sessionStorage.getItem(`mlitb.${kind}`) || "{}"); } catch { return {}; } },
  _set(kind, project, value) {
    const all = this._get(kind);
    if (value) all[project] = value; else delete all[project];
    sessionStorage.setItem(`mlitb.${kind}`, JSON.stringify(all));
  },
  join(project) { return (project && this._get("join")[project]) || null; },
  setJoin(project, value) { this._set("join", project, value); },
  contribute(project) { return (project && this._get("contribute")[project]) || null; },
  setContribute(project, value) { this._set("contribute", project, value); },
  operator() { return sessionStorage.getItem("mlitb.operator") || ""; },
  setOperator(value) { if (value) sessionStorage.setItem("mlitb.operator", value); else sessionStorage.removeItem("mlitb.operator"); },
};
if (params.has("join") || params.has("contribute")) {
  const project = params.get("project");
  if (project && params.get("join")) tokens.setJoin(project, params.get("join"));
  if (project && params.get("contribute")) tokens.setContribute(project, params.get("contribute"));
  params.delete("join");
  params.delete("contribute");
  const query = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${query ? "?" + query : ""}${location.hash}`);
}
window.mlitbTokens = tokens; // for the tests

/** A DOM element: h("td", {class: "num"}, "12"). Text is always set as text, never as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

const fmt = {
  num: (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toPrecision(digits).replace(/\.?0+$/, "")),
  rate: (v) => (v === null || v === undefined ? "–" : v >= 100 ? Math.round(v).toLocaleString("en") : v.toFixed(1)),
  pct: (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`),
  int: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en")),
  ms: (v) => (v === null || v === undefined ? "–" : `${v.toFixed(0)} ms`),
  s: (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)} s`),
};

const state = {
  link: null,
  pool: new WorkerPool(),
  projects: [],
  projectsLoaded: false,
  zoo: [], // the master's model zoo (list_zoo)
  project: params.get("project") || localStorage.getItem("mlitb.project") || null,
  status: null, // the selected project's latest status snapshot
  events: [],
  tracker: null,
  image: null, // {bitmap, width, height, blob, name}
  view: "projects",
  dataBase: null,
};
window.mlitb = state; // for the tests and the curious

// -- the master's URL -------------------------------------------------------------------------------
async function masterUrl() {
  const given = params.get("master");
  if (given) return given;
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) {
      const config = await r.json();
      // A page opened over https:// cannot open ws:// (mixed content): ask for wss:// instead.
      if (config.master_url) {
        const url = reachable(config.master_url, location.hostname);
        return location.protocol === "https:" ? url.replace(/^ws:\/\//, "wss://") : url;
      }
    }
  } catch { /* no configuration: the default below */ }
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname || "localhost"}:8000`;
}

// -- views ------------------------------------------------------------------------------------------
const VIEWS = ["projects", "train", "predict", "stats", "download", "design"];

function showView() {
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "projects";
  state.view = view;
  for (const section of document.querySelectorAll("main .view")) section.hidden = section.dataset.view !== view;
  for (const a of document.querySelectorAll(".tabs a")) a.classList.toggle("active", a.dataset.view === view);
  $("#projectbar").hidden = view === "projects";
  if (view === "predict") { ensureTracker(); showTokenField(); }
  if (view === "stats") renderStats();
  if (view === "train") renderTrainers();
  if (view === "design") designView.render();
}

// -- the master link and the projects ---------------------------------------------------------------
function renderLink() {
  const link = state.link;
  const el = $("#link");
  el.dataset.state = link.state;
  el.title = link.message;
  $("#link-text").textContent = link.state === "connected" ? "master connected"
    : link.state === "connecting" ? "connecting…" : "master unreachable";
  const banner = $("#banner");
  banner.hidden = link.state !== "unreachable";
  if (link.state === "unreachable") {
    const wait = link.retryAt ? Math.max(0, Math.ceil((link.retryAt - Date.now()) / 1000)) : 0;
    $("#banner-text").textContent = `${link.message}. Retrying in ${wait} s…`;
  }
  renderProjects();
}

async function refreshProjects() {
  if (state.link.state !== "connected") return;
  try {
    state.projects = await state.link.listProjects();
    state.projectsLoaded = true;
    state.zoo = await state.link.listZoo();
  } catch (err) {
    return;
  }
  renderZoo();
  if (state.view === "design") designView.render();
  if (!state.projects.some((p) => p.name === state.project)) {
    selectProject(state.projects.length === 1 ? state.projects[0].name : null, false);
  }
  renderProjects();
  renderProjectBar();
}

function selectProject(name, navigate = true, view = null) {
  const changed = name !== state.project;
  state.project = name;
  if (name) localStorage.setItem("mlitb.project", name);
  if (changed) {
    state.status = null;
    state.events = [];
    if (state.tracker) { state.tracker.close(); state.tracker = null; }
    clearPrediction();
  }
  if (name) state.link.subscribe(name, 1);
  renderProjectBar();
  renderProjects();
  if (navigate && view) location.hash = view;
  if (state.view === "predict") ensureTracker();
  renderAll();
}

/** How many workers of each role: {trainer, stats, tracker}. */
function roleCounts(workers) {
  const counts = { trainer: 0, stats: 0, tracker: 0 };
  for (const w of workers) counts[w.role] = (counts[w.role] || 0) + 1;
  return counts;
}

function describeRoles(c) {
  const parts = [`${fmt.int(c.trainer)} trainer${c.trainer === 1 ? "" : "s"}`];
  if (c.stats) parts.push(`${fmt.int(c.stats)} stats`);
  if (c.tracker) parts.push(`${fmt.int(c.tracker)} tracker${c.tracker === 1 ? "" : "s"}`);
  return parts.join(" · ");
}

function summaryOf(name) { return state.projects.find((p) => p.name === name) || null; }

let shownProjects = null;
function renderProjects() {
  const list = $("#project-list"), empty = $("#projects-empty");
  const link = state.link;
  // Re-render only what changed, so a click never lands on a card being replaced.
  const roles = state.status ? roleCounts(state.status.workers) : null;
  const key = JSON.stringify([link.state, state.projectsLoaded, state.project, state.projects, roles]);
  if (key === shownProjects) return;
  shownProjects = key;
  list.replaceChildren();
  if (link.state !== "connected" && !state.projectsLoaded) {
    empty.hidden = false;
    empty.textContent = link.state === "unreachable"
      ? `The master at ${link.url} cannot be reached. This page keeps trying; check that the master runs (mlitb master) and that this URL is right (add ?master=ws://HOST:PORT to the address).`
      : `Connecting to the master at ${link.url}…`;
    return;
  }
  if (!state.projects.length) {
    empty.hidden = false;
    empty.textContent = "The master has no projects yet. An operator creates one with `mlitb project create`.";
    return;
  }
  empty.hidden = true;
  for (const p of state.projects) {
    const shape = p.input_shape ? `${p.input_shape[2]}×${p.input_shape[1]}×${p.input_shape[0]}` : "–";
    const selected = p.name === state.project;
    list.append(h("article", { class: `card project${selected ? " selected" : ""}`, "data-project": p.name },
      h("header", {}, h("h3", {}, p.name), h("span", { class: `badge ${p.state}` }, p.state)),
      h("dl", { class: "facts" },
        h("dt", {}, "iteration"), h("dd", {}, fmt.int(p.iteration)),
        h("dt", {}, "T"), h("dd", {}, `${p.iteration_time} s`),
        // The summary counts every connection; the selected project's status tells the roles.
        h("dt", {}, "workers"), h("dd", { class: "workers", title: "connections of every role: trainers, stats workers, trackers" },
          selected && roles ? describeRoles(roles) : `${fmt.int(p.workers)} connected`),
        h("dt", {}, "data"), h("dd", {}, `${fmt.int(p.data.total)} train · ${fmt.int(p.data.test)} test`),
        h("dt", {}, "input"), h("dd", {}, shape),
        h("dt", {}, "labels"), h("dd", { title: p.labels.join(", ") }, `${p.labels.length}: ${p.labels.slice(0, 6).join(", ")}${p.labels.length > 6 ? ", …" : ""}`),
        h("dt", {}, "loss"), h("dd", {}, fmt.num(p.loss)),
        h("dt", {}, "test error"), h("dd", {}, fmt.pct(p.test_error))),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", onclick: () => selectProject(p.name, true, "train") }, "Train"),
        h("button", { type: "button", onclick: () => selectProject(p.name, true, "predict") }, "Predict"),
        h("button", { type: "button", onclick: () => selectProject(p.name, true, "stats") }, "Stats"),
        h("button", { type: "button", onclick: () => selectProject(p.name, true, "download") }, "Download"))));
  }
}

let shownZoo = null;
function renderZoo() {
  const entries = state.zoo || [];
  const key = JSON.stringify(entries);
  if (key === shownZoo) return;
  shownZoo = key;
  $("#zoo").hidden = !entries.length;
  const list = $("#zoo-list");
  list.replaceChildren();
  for (const e of entries) {
    const name = h("input", { type: "text", value: `${e.name}-run`, "aria-label": "new project name" });
    const token = h("input", { type: "password", placeholder: "operator token", "aria-label": "operator token", value: tokens.operator() });
    const start = async (event) => {
      event.preventDefault();
      const result = $("#zoo-result");
      result.dataset.status = "pending";
      result.textContent = `starting ${name.value} from ${e.name}…`;
      try {
        tokens.setOperator(token.value);
        await operatorRequest(state.link.url, token.value,
          { type: "create_project", name: name.value, zoo: e.name });
        result.dataset.status = "ok";
        result.textContent = `started project ${name.value} from ${e.name}: add data and trainers to continue its training`;
        refreshProjects();
      } catch (err) {
        result.dataset.status = "error";
        result.textContent = `could not start ${name.value}: ${err.message}`;
      }
    };
    list.append(h("article", { class: "card zoo-entry", "data-zoo": e.name },
      h("header", {}, h("h3", {}, e.name), h("span", { class: "badge" }, e.optimizer)),
      h("dl", { class: "facts" },
        h("dt", {}, "parameters"), h("dd", {}, fmt.int(e.parameter_count)),
        h("dt", {}, "input"), h("dd", {}, `${e.input_shape[2]}×${e.input_shape[1]}×${e.input_shape[0]}`),
        h("dt", {}, "labels"), h("dd", { title: e.labels.join(", ") }, `${e.labels.length}: ${e.labels.slice(0, 6).join(", ")}`),
        h("dt", {}, "iterations"), h("dd", {}, fmt.int(e.iteration)),
        h("dt", {}, "test error"), h("dd", {}, fmt.pct(e.test_error)),
        h("dt", {}, "created"), h("dd", {}, e.created)),
      h("form", { class: "actions", onsubmit: start }, name, token,
        h("button", { type: "submit", class: "primary" }, "Start a project"))));
  }
}

function renderProjectBar() {
  const select = $("#project-select");
  const names = state.projects.map((p) => p.name);
  if (state.project && !names.includes(state.project)) names.unshift(state.project);
  const current = [...select.options].map((o) => o.value).join("\n");
  if (current !== ["", ...names].join("\n")) {
    select.replaceChildren(h("option", { value: "" }, "— choose —"), ...names.map((n) => h("option", { value: n }, n)));
  }
  select.value = state.project || "";
  const p = summaryOf(state.project), st = state.status;
  const badge = $("#project-state");
  const projectState = st ? st.state : p ? p.state : "";
  badge.textContent = projectState;
  badge.className = `badge ${projectState}`;
  $("#project-facts").textContent = p || st
    ? `iteration ${fmt.int(st ? st.iteration : p.iteration)} · T ${st ? st.iteration_time : p.iteration_time} s · ${(p ? p.labels.length : "?")} labels`
    : "";
}

// -- train --------------------------------------------------------------------------------------------
function addWorker(role) {
  if (!state.project) { location.hash = "projects"; return; }
  state.pool.add(state.link.url, state.project, role, tokens.join(state.project));
}

function renderTrainers() {
  const list = $("#trainer-list");
  const workers = state.pool.list();
  $("#trainer-empty").hidden = workers.length > 0;
  list.replaceChildren(...workers.map((w) => {
    const s = w.status;
    const phase = w.ending ? "leaving" : s.phase;
    const title = `${w.role === "stats" ? "Stats worker" : "Trainer"} ${w.key}`;
    const detail = w.role === "stats"
      ? [h("dt", {}, "test error"), h("dd", {}, fmt.pct(s.testError))]
      : [h("dt", {}, "loss"), h("dd", {}, fmt.num(s.loss)),
        h("dt", {}, "training"), h("dd", { class: "algorithm" }, s.algorithm === "local"
          ? `local steps${s.steps === null || s.steps === undefined ? "" : ` (${fmt.int(s.steps)} last round)`}`
          : s.algorithm === "gradient" ? "gradient sums" : "–"),
        ...(s.wire && s.wire !== "float32" ? [h("dt", {}, "wire"), h("dd", { class: "wire" }, s.wire)] : [])];
    return h("article", { class: "card worker", "data-key": w.key, "data-phase": phase },
      h("header", {}, h("h3", {}, title), h("span", { class: `badge ${phase}` }, phase)),
      h("div", { class: "rate" }, h("strong", {}, fmt.rate(s.samplesPerS)), " samples/s"),
      h("dl", { class: "facts" },
        h("dt", {}, "project"), h("dd", {}, w.project),
        h("dt", {}, "worker id"), h("dd", {}, s.workerId ?? "–"),
        h("dt", {}, "cached"), h("dd", {}, `${fmt.int(s.cached)} / ${fmt.int(s.allocated)}`),
        h("dt", {}, "iteration"), h("dd", {}, fmt.int(s.iteration)),
        h("dt", {}, "results"), h("dd", {}, fmt.int(s.results)),
        ...(w.role === "stats" ? [] : [
          h("dt", {}, "samples given"), h("dd", { class: "given" }, fmt.int(s.samples)),
          h("dt", {}, "last result"), h("dd", { class: "last" }, s.lastIteration === null || s.lastIteration === undefined ? "–"
            : `${fmt.int(s.lastSamples)} samples, ${fmt.pct(s.accuracy)} right, iteration ${fmt.int(s.lastIteration)}`),
          h("dt", {}, "share"), h("dd", { class: "share" }, (() => {
            // Of the master's last reduced iteration (its results arrived before the reduce).
            const it = lastIteration();
            const share = it === null || w.project !== state.project ? null : shareOf(it, [w]);
            return share === null ? "–" : `${fmt.pct(share)} of iteration ${fmt.int(it)}`;
          })())]),
        ...detail,
        h("dt", {}, "engine"), h("dd", {}, s.simd === null || s.simd === undefined ? "–" : s.simd ? "wasm SIMD" : "JavaScript")),
      s.message ? h("p", { class: "message" }, s.message) : null,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => state.pool.remove(w.key), disabled: w.ending }, "Remove")));
  }));
  renderContribution();
  renderWorkerTable();
}

/** The last iteration the master reduced (from its status), or null. */
function lastIteration() {
  const history = state.status ? state.status.history : [];
  return history.length ? history[history.length - 1].iteration : null;
}

/** The samples the master reduced in `iteration` (its history), or null if not known. */
function iterationSamples(iteration) {
  const history = state.status ? state.status.history : [];
  for (let i = history.length - 1; i >= 0; i--) {
    if (history[i].iteration === iteration) return history[i].samples;
    if (history[i].iteration < iteration) break;
  }
  return null;
}

/** The share of `iteration`'s samples this browser's trainers gave, or null. */
function shareOf(iteration, trainers) {
  const total = iterationSamples(iteration);
  if (!total) return null;
  let mine = 0;
  for (const w of trainers) for (const [it, n] of w.status.given || []) if (it === iteration) mine += n;
  return Math.min(1, mine / total);
}

/** What this browser's trainers gave the project, and how well the project is learning. */
function renderContribution() {
  const el = $("#contribution");
  const st = state.status;
  const trainers = state.pool.list().filter((w) => w.role === "trainer" && w.project === state.project);
  const last = st && st.history.length ? st.history[st.history.length - 1] : null;
  const test = st && st.test_error.length ? st.test_error[st.test_error.length - 1] : null;
  el.hidden = !st && !trainers.length;
  if (el.hidden) return;
  const samples = trainers.reduce((sum, w) => sum + (w.status.samples || 0), 0);
  const results = trainers.reduce((sum, w) => sum + (w.status.results || 0), 0);
  const share = last ? shareOf(last.iteration, trainers) : null;
  const item = (key, label, value, title = null) => h("div", { class: "stat", "data-stat": key, title },
    h("span", {}, label), h("strong", {}, value));
  el.replaceChildren(
    item("given", "your trainers gave", `${fmt.int(samples)} samples`, "samples this page's trainers computed on, since it opened"),
    item("results", "results sent", fmt.int(results)),
    item("share", last ? `share of iteration ${fmt.int(last.iteration)}` : "share of the last iteration",
      share === null ? "–" : fmt.pct(share), "this page's samples / every trainer's samples in the master's last reduced iteration"),
    item("accuracy", "training accuracy", last && last.accuracy !== null ? fmt.pct(last.accuracy) : "–",
      "correct / samples over every trainer's batches in the last iteration"),
    item("test-error", "test error", test ? fmt.pct(test.error) : "–", "from stats workers"),
    item("iteration", "project iteration", st ? fmt.int(st.iteration) : "–"));
}

function renderWorkerTable() {
  const body = $("#worker-table tbody");
  const workers = state.status ? state.status.workers : [];
  if (!workers.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "hint" }, state.project ? "no workers on this project yet" : "no project chosen")));
    return;
  }
  // State and speed come first: a phone shows them without scrolling (and hides the "wide" ones).
  body.replaceChildren(...workers.map((w) => h("tr", { "data-client": w.client, "data-state": w.state },
    h("td", {}, w.worker_id), h("td", {}, w.role),
    h("td", { class: "state" }, h("span", { class: `badge ${w.state}` }, w.state)),
    h("td", { class: "num rate" }, fmt.rate(w.samples_per_s)),
    h("td", { class: "num" }, `${fmt.int(w.cached)} / ${fmt.int(w.allocated)}`),
    h("td", { class: "num wide" }, fmt.ms(w.latency_ms)), h("td", { class: "num wide" }, fmt.s(w.budget_s)),
    h("td", { class: "wide" }, w.client), h("td", { class: "host wide" }, w.host))));
}

// -- predict and teach ------------------------------------------------------------------------------
function ensureTracker() {
  if (state.tracker || !state.project || !state.link) { renderTracker(); return; }
  const tracker = new Tracker(state.link.url, state.project, tokens.join(state.project));
  state.tracker = tracker;
  let pending = false;
  tracker.addEventListener("change", () => {
    renderTracker();
    if (!pending) { // predictions follow the parameters as they train, at most twice a second
      pending = true;
      setTimeout(() => { pending = false; predict(); }, 500);
    }
  });
  renderTracker();
}

function renderTracker() {
  const t = state.tracker, el = $("#tracker-state");
  if (!state.project) { el.textContent = "Choose a project first (Projects tab)."; return; }
  if (!t) { el.textContent = "Not tracking."; return; }
  if (t.state === "tracking") {
    el.textContent = t.hasParams
      ? `Tracking ${t.project}: parameters v${t.version} (iteration ${t.iteration}), ${t.labels.length} labels.`
      : `Tracking ${t.project}: waiting for parameters…`;
  } else {
    el.textContent = `Tracker ${t.state}: ${t.message}`;
  }
  el.dataset.state = t.state;
  const labels = $("#label-list");
  labels.replaceChildren(...t.labels.map((l) => h("option", { value: l })));
}

function clearPrediction() {
  $("#top-labels").replaceChildren(h("li", { class: "hint" }, "Choose an image or take a camera frame."));
}

/** Forget the image on show (after a file that is not one): nothing left to predict. */
function dropImage() {
  if (state.image && state.image.url) URL.revokeObjectURL(state.image.url);
  state.image = null;
  $("#original").removeAttribute("src");
  const canvas = $("#converted");
  canvas.width = 1;
  canvas.height = 1;
}

function imageError(text) {
  dropImage();
  const el = $("#image-error");
  el.textContent = text;
  el.hidden = false;
  $("#top-labels").replaceChildren(h("li", { class: "error" }, text));
}

async function useImage(blob, name, bitmap = null) {
  $("#image-error").hidden = true;
  if (!bitmap && blob.type && !blob.type.startsWith("image/")) {
    imageError(`${name} is not an image (its type is ${blob.type}): choose a PNG, JPEG, GIF, WebP or BMP file.`);
    return;
  }
  try {
    bitmap = bitmap || await decodeFile(blob);
  } catch (err) {
    imageError(`${name} is not an image this browser can decode (${err && err.message ? err.message : "unreadable"}): choose a PNG, JPEG, GIF, WebP or BMP file.`);
    return;
  }
  if (state.image && state.image.url) URL.revokeObjectURL(state.image.url);
  const url = URL.createObjectURL(blob);
  state.image = { bitmap, width: bitmap.width, height: bitmap.height, blob, name, url };
  $("#original").src = url;
  $("#teach-result").textContent = "";
  predict();
}

function predict() {
  const t = state.tracker, img = state.image;
  if (!img) return;
  if (!t || !t.net) {
    $("#top-labels").replaceChildren(h("li", { class: "hint" }, "Waiting for the project's network…"));
    return;
  }
  const shape = t.net.inputShape;
  const { x, rgba } = convert(img.bitmap, img.width, img.height, shape);
  const canvas = $("#converted");
  canvas.width = shape[2];
  canvas.height = shape[1];
  canvas.getContext("2d").putImageData(rgba, 0, 0);
  $("#converted-caption").textContent = `as the network sees it (${shape[2]}×${shape[1]}, ${shape[0] === 1 ? "gray" : "RGB"})`;
  if (!t.hasParams) {
    $("#top-labels").replaceChildren(h("li", { class: "hint" }, "Waiting for parameters…"));
    return;
  }
  const ranked = t.predict(x).sort((a, b) => b.p - a.p).slice(0, 5);
  const softmax = t.info && t.info.spec[t.info.spec.length - 1].type === "softmax";
  $("#top-labels").replaceChildren(...ranked.map((r) => h("li", { "data-label": r.label },
    h("span", { class: "label" }, r.label),
    h("span", { class: "bar" }, h("span", { style: `width:${Math.max(0, Math.min(1, softmax ? r.p : 1)) * 100}%` })),
    h("span", { class: "p" }, softmax ? fmt.pct(r.p) : fmt.num(r.p)))));
  $("#top-labels").dataset.version = t.version;
}

let camera = null;
async function startCamera() {
  const note = $("#camera-note"), video = $("#camera");
  if (camera) { stopCamera(); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    note.textContent = "This browser gives no camera here (cameras need https:// or localhost).";
    return;
  }
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (err) {
    note.textContent = `No camera: ${err.name === "NotAllowedError" ? "permission denied" : err.message || err.name}.`;
    camera = null;
    return;
  }
  video.srcObject = camera;
  video.hidden = false;
  await video.play().catch(() => {});
  $("#camera-snap").hidden = false;
  $("#camera-start").textContent = "Stop camera";
  note.textContent = "";
}

function stopCamera() {
  if (camera) for (const track of camera.getTracks()) track.stop();
  camera = null;
  $("#camera").hidden = true;
  $("#camera-snap").hidden = true;
  $("#camera-start").textContent = "Camera";
}

async function snapFrame() {
  const video = $("#camera");
  if (!video.videoWidth) return;
  const canvas = h("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  await useImage(blob, `camera-${new Date().toISOString().replace(/[:.]/g, "-")}.png`);
}

function dataBase() {
  const welcome = state.link.welcome;
  if (!welcome || !welcome.data_url) return location.origin;
  const announced = reachable(welcome.data_url, new URL(state.link.url).hostname);
  return sameServer(announced, location.origin) ? location.origin : announced;
}

function showTokenField() {
  // The operator-token field, unless this tab holds the project's contributor token.
  const field = $("#upload-token");
  field.hidden = Boolean(tokens.contribute(state.project));
  if (!field.value) field.value = tokens.operator();
}

async function teach(event) {
  event.preventDefault();
  const out = $("#teach-result"), label = $("#teach-label").value.trim();
  if (!state.image) { out.textContent = "Choose an image or take a camera frame first."; return; }
  if (!label) return;
  const q = new URLSearchParams({ label, split: "train", name: state.image.name.slice(0, 200) });
  const headers = { "Content-Type": state.image.blob.type || "application/octet-stream" };
  // The operator token typed here (kept in sessionStorage), else this project's contributor
  // token from a contributor link: sent as a header, never in the URL.
  const typed = $("#upload-token").value;
  if (typed) tokens.setOperator(typed);
  const token = typed || tokens.contribute(state.project) || tokens.operator();
  if (!token) {
    out.textContent = "Teaching needs the operator token (enter it above) or the project's contributor link.";
    out.dataset.status = "needs-token";
    return;
  }
  headers.Authorization = `Bearer ${token}`;
  const isNew = !(state.tracker && state.tracker.labels.includes(label));
  out.textContent = "uploading…";
  $("#teach-button").disabled = true;
  try {
    const r = await fetch(`${dataBase()}/projects/${encodeURIComponent(state.project)}/images?${q}`,
      { method: "POST", body: state.image.blob, headers });
    let body = {};
    try { body = await r.json(); } catch { /* not JSON */ }
    if (r.status === 401) {
      out.textContent = token
        ? `Refused: ${body.error || "the token was wrong"}. Enter the operator token above, or open the project's contributor link, and teach again.`
        : "Teaching needs the operator token or the project's contributor link: enter the operator token above and teach again.";
    } else if (!r.ok) {
      out.textContent = `Refused (HTTP ${r.status}): ${body.error || r.statusText}`;
    } else {
      out.textContent = `Stored as data id ${body.ids[0]} with label “${label}”` +
        (isNew ? `: a new label, the network grows to ${body.labels.length} classes.` : ".");
    }
    out.dataset.status = r.status;
  } catch (err) {
    out.textContent = `Upload failed: ${err.message}`;
  } finally {
    $("#teach-button").disabled = false;
  }
}

// -- stats --------------------------------------------------------------------------------------------
function renderStats() {
  if (state.view !== "stats") return;
  const st = state.status;
  const summary = $("#stats-summary");
  if (!st) {
    summary.replaceChildren(h("p", { class: "hint" }, state.project ? "Waiting for the master's status…" : "Choose a project first (Projects tab)."));
  } else {
    const last = st.history[st.history.length - 1], test = st.test_error[st.test_error.length - 1];
    const trainers = st.workers.filter((w) => w.role === "trainer");
    const rate = trainers.reduce((sum, w) => sum + (w.samples_per_s || 0), 0);
    const item = (label, value) => h("div", { class: "stat" }, h("span", {}, label), h("strong", {}, value));
    summary.replaceChildren(
      item("iteration", fmt.int(st.iteration)),
      item("test error", test ? `${fmt.pct(test.error)} (${test.samples >= st.data.test ? "all" : "a subset of"} ${fmt.int(test.samples)})` : "–"),
      item("training loss", last ? fmt.num(last.loss) : "–"),
      item("samples / iteration", last ? fmt.int(last.samples) : "–"),
      item("trainers", `${trainers.length} · ${fmt.rate(rate)} samples/s`),
      item("compute / reduce", `${fmt.s(st.timing.compute)} / ${fmt.s(st.timing.reduce)}`));
  }
  const history = st ? st.history : [], tests = st ? st.test_error : [];
  const xLabel = st ? `iteration (T = ${st.iteration_time} s)` : "iteration";
  drawChart($("#error-chart"), {
    xLabel, yMin: 0, percent: true,
    empty: "no test error yet: add a stats worker (Train tab) or run `mlitb node join … --task stats`",
    series: [
      // A stats worker evaluates a fixed subset per report and the whole test set every few.
      { label: "test error (whole test set)", color: "#d1495b", dots: true,
        points: tests.filter((p) => p.samples >= st.data.test).map((p) => [p.iteration, p.error]) },
      { label: "test error (subset)", color: "#e8a0a8", dots: true, width: 1,
        points: tests.filter((p) => p.samples < st.data.test).map((p) => [p.iteration, p.error]) },
      { label: "training error", color: "#8fb3e8", width: 1.5, dashed: true,
        points: history.filter((p) => p.accuracy !== null && p.samples > 0).map((p) => [p.iteration, 1 - p.accuracy]) },
    ],
  });
  drawChart($("#loss-chart"), {
    xLabel, yMin: 0,
    series: [{ label: "training loss", color: "#2456a6", points: history.filter((p) => p.samples > 0).map((p) => [p.iteration, p.loss]) }],
  });
  const events = $("#events");
  if (state.events.length) {
    events.replaceChildren(...state.events.slice(-30).reverse().map((e) =>
      h("li", {}, h("span", { class: "time" }, `${e.time.toFixed(1)} s`), h("span", { class: `kind ${e.kind}` }, e.kind), e.message)));
  }
}

function onStatus(msg) {
  const st = msg.projects.find((p) => p.name === state.project) || null;
  if (!st) return;
  state.status = st;
  for (const e of msg.events || []) if (!e.project || e.project === state.project) state.events.push(e);
  if (state.events.length > 200) state.events.splice(0, state.events.length - 200);
  renderAll();
}

function renderAll() {
  renderProjectBar();
  if (state.view === "projects") renderProjects();
  if (state.view === "train") renderTrainers();
  if (state.view === "stats") renderStats();
  if (state.view === "design") designView.render();
}

// -- design (the operator view: design.js) ---------------------------------------------------------
let designView = { render() {} };

// -- download -----------------------------------------------------------------------------------------
async function download(format) {
  const out = $("#download-result");
  if (!state.project) { out.textContent = "Choose a project first."; return; }
  out.textContent = `asking the master for the ${format}…`;
  try {
    const reply = await state.link.getModel(state.project, format);
    const text = JSON.stringify(reply.model);
    const blob = new Blob([text], { type: "application/json" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `${state.project}.${format}.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    out.textContent = `Saved ${state.project}.${format}.json (${(text.length / 1024).toFixed(1)} KiB).`;
  } catch (err) {
    out.textContent = `Download failed: ${err.message}`;
  }
}

// -- start --------------------------------------------------------------------------------------------
async function main() {
  const url = await masterUrl();
  $("#master-url").textContent = url;
  $("#footer-master").textContent = `master ${url}`;
  $("#cores").textContent = navigator.hardwareConcurrency ? `this device has ${navigator.hardwareConcurrency} cores` : "";
  state.link = new MasterLink(url);
  state.link.addEventListener("state", () => {
    renderLink();
    if (state.link.state === "connected") {
      refreshProjects();
      if (state.project) state.link.subscribe(state.project, 1);
    }
  });
  state.link.addEventListener("status", (e) => onStatus(e.detail));
  designView = initDesign({ h, fmt, state, tokens, dataBase, refreshProjects, selectProject });
  state.link.start();
  setInterval(refreshProjects, 2000);
  setInterval(() => { if (state.link.state === "unreachable") renderLink(); }, 1000);

  window.addEventListener("hashchange", showView);
  $("#retry").addEventListener("click", () => state.link.retryNow());
  $("#project-select").addEventListener("change", (e) => selectProject(e.target.value || null, false));
  $("#add-trainer").addEventListener("click", () => addWorker("trainer"));
  $("#add-stats").addEventListener("click", () => addWorker("stats"));
  $("#remove-all").addEventListener("click", () => { for (const w of state.pool.list()) state.pool.remove(w.key); });
  state.pool.addEventListener("change", () => { if (state.view === "train") renderTrainers(); });
  $("#image-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) useImage(file, file.name);
  });
  $("#camera-start").addEventListener("click", startCamera);
  $("#camera-snap").addEventListener("click", snapFrame);
  $("#teach-form").addEventListener("submit", teach);
  for (const button of document.querySelectorAll("[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  let resize = null;
  window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(renderStats, 100); });
  window.addEventListener("beforeunload", () => { for (const w of state.pool.list()) w.worker.postMessage({ cmd: "stop" }); });
  showView();
  renderLink();
  renderProjectBar();
  document.body.dataset.ready = "true";
}

main();
