// The operator view (Design tab): a network designer that creates projects, and the controls
// that run one (upload a zip, pause/resume, live hyperparameters, T and training settings,
// remove a worker, delete the project). Everything it changes goes over the master's WebSocket as the operator requests
// the console sends (docs/protocol.md), on an operator link that carries the token: the token is
// typed once and kept in this tab's sessionStorage only. Zips go to the data server's upload
// route with the same token, as `mlitb data upload` sends them.

import { MasterLink } from "./lib/master.js";
import {
  analyze, checkHyperparameters, COMMON_HYPERPARAMETERS, createMessage, exportSpec, hyperparameterDefaults,
  hyperparametersFrom, importSpec, LAYER_FIELDS, LAYER_TYPES, newLayer, OPTIMIZERS, otherFields,
  newToken, parseValue, PRESETS, RECIPES, refusalTarget, showShape, showValue, trainingFrom, TRAINING_FIELDS,
} from "./lib/designer.js";

const $ = (selector) => document.querySelector(selector);

/**
 * Wire the view to the page: `ctx` gives the page's helpers (h, fmt), its state (the link, the
 * selected project and its status), the tokens store, dataBase() and refreshProjects() /
 * selectProject(). Returns {render}: called by the page on every status and view change.
 */
export function initDesign(ctx) {
  const { h, fmt, state, tokens } = ctx;
  const design = {
    link: null, // the operator link (a MasterLink with the token)
    rows: PRESETS.cifar10.spec.map((d) => ({ ...d })),
    optimizer: "adagrad", // "" with a zoo entry: the closure's
    zoo: null, // the zoo entry (list_zoo) a project would start from instead of the rows
    signedIn: false, // the master accepted the token on this link (it may be reconnecting now)
    upload: null, // the XMLHttpRequest in flight
    deleting: null, // the project whose deletion waits for a second click
  };
  state.design = design; // for the tests

  // -- the operator token and its link --------------------------------------------------------
  function signIn(token) {
    if (design.link) design.link.close();
    design.link = null;
    design.signedIn = false;
    if (!token) { renderLogin(); return; }
    const link = new MasterLink(state.link.url, { token });
    design.link = link;
    link.addEventListener("state", () => {
      if (design.link !== link) return;
      if (link.state === "connected" && !link.authorized) {
        // A hello without a token is welcomed read-only; with one, a wrong token is refused
        // (1008) before a welcome. Either way this link may not change anything.
        link.close();
      }
      if (link.state === "connected" && link.authorized) design.signedIn = true;
      if (link.state === "refused") { tokens.setOperator(""); design.signedIn = false; }
      renderLogin();
      render();
    });
    link.start();
    renderLogin();
  }

  function authorized() { return Boolean(design.link && design.link.state === "connected" && design.link.authorized); }

  function renderLogin() {
    const link = design.link, out = $("#op-state");
    const ok = authorized();
    out.dataset.state = link ? link.state : "none";
    out.textContent = !link ? "Operator requests need the operator token (mlitb master prints it)."
      : ok ? "Signed in as the operator: this tab keeps the token until it closes."
      : link.state === "refused" ? `Refused: ${link.message}. Type the right token.`
      : link.state === "connecting" ? "Checking the token…"
      : link.state === "unreachable" ? `Cannot reach the master (${link.message}); retrying with the token…`
      : `Not signed in (${link.message}).`;
    out.className = link && link.state === "refused" ? "error" : "hint";
    // Signed in once, the view stays while the link reconnects (a master restart): what was
    // designed stays, and a request meanwhile says it is not connected.
    $("#op-views").hidden = !(ok || (design.signedIn && link && link.state !== "closed"));
    $("#op-logout").hidden = !link;
  }

  async function request(message) {
    if (!authorized()) {
      throw new Error(design.signedIn ? `not connected to the master now (${design.link.message}); the page reconnects with the token`
        : "sign in with the operator token first");
    }
    return design.link.request(message);
  }

  // -- layers -----------------------------------------------------------------------------------
  function fieldInput(row, i, f) {
    const attrs = { "data-key": f.key, "aria-label": `layer ${i} ${f.label}` };
    const onChange = (e) => {
      const value = f.choices ? (e.target.value || undefined) : parseValue(e.target.value);
      if (value === undefined) delete row[f.key]; else row[f.key] = value;
      update();
    };
    const input = f.choices
      ? h("select", { ...attrs, onchange: onChange }, ...f.choices.map((c) =>
        h("option", { value: c, selected: showValue(row[f.key]) === c }, c || "none")))
      : h("input", { ...attrs, type: "text", inputmode: "decimal", size: 6, value: showValue(row[f.key]),
        placeholder: f.placeholder || "", oninput: onChange });
    return h("label", { class: "field" }, h("span", {}, f.label), input);
  }

  function renderLayers() {
    const body = $("#layers tbody");
    const n = design.rows.length;
    body.replaceChildren(...design.rows.flatMap((row, i) => {
      const typeSelect = h("select", { class: "type", "aria-label": `layer ${i} type`, onchange: (e) => {
        design.rows[i] = newLayer(e.target.value);
        renderLayers();
      } }, ...LAYER_TYPES.map((t) => h("option", { value: t, selected: t === row.type }, t)));
      const others = otherFields(row);
      const fields = (LAYER_FIELDS[row.type] || []).map((f) => fieldInput(row, i, f));
      if (Object.keys(others).length) fields.push(h("span", { class: "other", title: "fields the designer has no input for, sent as they are" }, JSON.stringify(others)));
      return [
        h("tr", { class: "layer", "data-index": i, "data-type": row.type },
          h("td", { class: "num index" }, h("span", {}, i), h("small", { class: "hint desugared" })), h("td", {}, typeSelect),
          h("td", { class: "fields-cell" }, h("div", { class: "fields" }, ...(fields.length ? fields : [h("span", { class: "hint" }, "no fields")]))),
          h("td", { class: "num shape" }, "–"), h("td", { class: "num params" }, "–"),
          h("td", {}, h("div", { class: "moves" },
            h("button", { type: "button", class: "up", title: "move up", "aria-label": `move layer ${i} up`, disabled: i === 0, onclick: () => move(i, -1) }, "↑"),
            h("button", { type: "button", class: "down", title: "move down", "aria-label": `move layer ${i} down`, disabled: i === n - 1, onclick: () => move(i, 1) }, "↓"),
            h("button", { type: "button", class: "remove", title: "remove", "aria-label": `remove layer ${i}`, onclick: () => { design.rows.splice(i, 1); renderLayers(); } }, "✕")))),
        h("tr", { class: "layer-error", "data-index": i, hidden: true }, h("td", { colspan: 6, class: "error", role: "alert" })),
      ];
    }));
    update();
  }

  function move(i, by) {
    const [row] = design.rows.splice(i, 1);
    design.rows.splice(i + by, 0, row);
    renderLayers();
  }

  /** Shapes, parameter counts and the engine's verdict, updated in place as one types. */
  function update() {
    const a = analyze(design.rows);
    design.analysis = a;
    a.rows.forEach((r, i) => {
      const tr = $(`#layers tr.layer[data-index="${i}"]`), err = $(`#layers tr.layer-error[data-index="${i}"]`);
      if (!tr) return;
      tr.querySelector(".shape").textContent = showShape(r.outShape);
      tr.querySelector(".params").textContent = r.outShape ? fmt.int(r.params) : "–";
      const [first, last] = [r.layers[0], r.layers[r.layers.length - 1]];
      const note = tr.querySelector(".desugared");
      note.textContent = r.layers.length > 1 ? `layers ${first}–${last}` : r.layers.length && first !== i ? `layer ${first}` : "";
      note.title = "the layer numbers of the engine's messages: desugaring adds an activation after a conv or fc layer, and an fc layer before a loss layer";
      tr.classList.toggle("invalid", Boolean(r.error));
      const field = r.error && /field '([a-z_0-9]+)'/.exec(r.error);
      for (const input of tr.querySelectorAll("[data-key]")) {
        input.setAttribute("aria-invalid", String(Boolean(field && input.dataset.key === field[1])));
      }
      err.hidden = !r.error;
      err.firstChild.textContent = r.error || "";
    });
    const summary = $("#net-summary");
    summary.textContent = a.error ? "the network is not valid yet" : `${fmt.int(a.numParams)} parameters`;
    summary.className = a.error ? "error" : "";
    const general = $("#net-error");
    general.hidden = !(a.error && (a.errorRow === null || a.errorRow >= design.rows.length));
    general.textContent = general.hidden ? "" : a.error;
    renderCreatable();
  }

  /** Create waits for a valid net (unless a zoo entry gives it) and valid hyperparameters. */
  function renderCreatable() {
    const netError = !design.zoo && design.analysis && design.analysis.error;
    $("#create").disabled = Boolean(netError) || Boolean(design.settingsError);
  }

  /** Use these rows (a preset, an import, a project's net): the designer, not a zoo entry. */
  function useRows(rows) {
    design.rows = rows;
    if (design.zoo) { design.zoo = null; if (!design.optimizer) design.optimizer = "adagrad"; renderZooMode(); }
    renderLayers();
  }

  /** Starting from a zoo entry: its closure gives the network (and its training so far), so the
   * table is put away and the optimizer may stay the closure's. */
  function renderZooMode() {
    const e = design.zoo;
    $("#zoo-mode").hidden = !e;
    $("#layers-area").hidden = Boolean(e);
    if (e) {
      $("#zoo-mode-text").textContent = `The project starts from the zoo entry ${e.name}: its network ` +
        `(${fmt.int(e.parameter_count)} parameters, input ${showShape(e.input_shape)}, ${e.labels.length} labels), ` +
        `parameters and optimizer state after ${fmt.int(e.iteration)} iterations; it continues that training. ` +
        "Empty fields below keep the closure's settings.";
    }
    const select = $("#create-optimizer");
    select.replaceChildren(...(e ? [h("option", { value: "" }, `the closure's (${e.optimizer})`)] : []),
      ...OPTIMIZERS.map((o) => h("option", { value: o }, o)));
    select.value = design.optimizer;
    renderOptimizer();
    checkSettings();
  }

  function loadPreset() {
    const key = $("#preset").value, out = $("#spec-io");
    if (PRESETS[key]) {
      useRows(PRESETS[key].spec.map((d) => ({ ...d })));
      out.textContent = `loaded ${PRESETS[key].title}`;
      return;
    }
    if (key.startsWith("zoo:")) {
      const entry = state.zoo.find((e) => `zoo:${e.name}` === key);
      if (!entry) return;
      design.zoo = entry;
      design.optimizer = "";
      out.textContent = `the project will start from the zoo entry ${entry.name}`;
      renderZooMode();
      return;
    }
    if (key.startsWith("project:")) {
      const project = key.slice("project:".length);
      out.textContent = `asking the master for ${project}'s network…`;
      state.link.getModel(project, "model").then((reply) => {
        useRows(importSpec(JSON.stringify(reply.model)));
        out.textContent = `loaded the network of project ${project}`;
      }, (err) => { out.textContent = `could not load ${project}'s network: ${err.message}`; });
    }
  }

  function renderPresets() {
    const select = $("#preset");
    const want = [...Object.entries(PRESETS).map(([k, p]) => [k, p.title]),
      ...state.projects.map((p) => [`project:${p.name}`, `the network of project ${p.name}`]),
      ...(state.zoo || []).map((e) => [`zoo:${e.name}`, `zoo entry ${e.name} (continues its training)`])];
    if ([...select.options].map((o) => o.value).join("\n") === want.map(([k]) => k).join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(...want.map(([k, title]) => h("option", { value: k }, title)));
    if (want.some(([k]) => k === chosen)) select.value = chosen;
  }

  async function importFile(e) {
    const file = e.target.files[0], out = $("#spec-io");
    e.target.value = "";
    if (!file) return;
    try {
      useRows(importSpec(await file.text()));
      out.textContent = `imported ${file.name} (${design.rows.length} layers)`;
      out.dataset.status = "ok";
    } catch (err) {
      out.textContent = `${file.name}: ${err.message}`;
      out.dataset.status = "error";
    }
  }

  function exportFile() {
    const blob = new Blob([exportSpec(design.rows)], { type: "application/json" });
    const name = `${$("#create-name").value || "network"}.spec.json`;
    const a = h("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    $("#spec-io").textContent = `saved ${name}: mlitb project create --model ${name} reads it`;
  }

  // -- optimizer, training and create ----------------------------------------------------------
  function settingInput(group, key, { label, placeholder = "", choices = null }) {
    const attrs = { "data-setting": `${group}.${key}`, name: `${group}.${key}`, "aria-label": label };
    const input = choices
      ? h("select", attrs, ...choices.map((c) => h("option", { value: c }, c || "default")))
      : h("input", { ...attrs, type: "text", size: 8, placeholder: String(placeholder) });
    return h("label", { class: "field" }, h("span", {}, label), input,
      h("small", { class: "error", "data-error-for": `${group}.${key}`, hidden: true }));
  }

  /** Check the hyperparameters as they are typed; a refusal shows at its field and blocks
   * creating (the master checks them again, and everything else, on create). */
  function checkSettings() {
    const form = $("#create-form");
    clearRefusals(form);
    const error = checkHyperparameters(currentOptimizer(), hyperparametersFrom(texts("hyperparameters")));
    design.settingsError = error;
    if (error) showRefusal(form, null, error);
    renderCreatable();
  }

  /** The optimizer the project will have: the one chosen, or the zoo entry's. */
  function currentOptimizer() { return design.optimizer || (design.zoo ? design.zoo.optimizer : "adagrad"); }

  function renderOptimizer() {
    const defaults = hyperparameterDefaults(currentOptimizer());
    const names = [...COMMON_HYPERPARAMETERS, ...Object.keys(defaults).filter((k) => !COMMON_HYPERPARAMETERS.includes(k))];
    $("#hp-fields").replaceChildren(...names.map((k) => settingInput("hyperparameters", k,
      { label: k, placeholder: typeof defaults[k] === "boolean" ? (defaults[k] ? "1" : "0") : defaults[k] })));
  }

  function renderTrainingFields() {
    $("#training-fields").replaceChildren(...TRAINING_FIELDS.map((f) => {
      const label = settingInput("training", f.key, f);
      if (f.only) label.dataset.only = f.only;
      return label;
    }));
    showAlgorithmFields();
  }

  function showAlgorithmFields() {
    const algorithm = $('[data-setting="training.algorithm"]').value || "gradient";
    for (const el of document.querySelectorAll("#training-fields [data-only]")) el.hidden = el.dataset.only !== algorithm;
  }

  function texts(group) {
    return Object.fromEntries([...document.querySelectorAll(`#create-form [data-setting^="${group}."]`)]
      .map((el) => [el.dataset.setting.slice(group.length + 1), el.value]));
  }

  function clearRefusals(form) {
    for (const el of form.querySelectorAll("[data-error-for]")) { el.hidden = true; el.textContent = ""; }
    for (const el of form.querySelectorAll("[aria-invalid=true]")) el.setAttribute("aria-invalid", "false");
  }

  /** Show a master's refusal next to the field (or layer) it names, and in `out`. */
  function showRefusal(form, out, message, field = null) {
    if (out) {
      out.textContent = `Refused: ${message}`;
      out.dataset.status = "error";
    }
    const target = field ? { field } : refusalTarget(message, Object.keys(texts("hyperparameters")));
    if (target.field) {
      const note = form.querySelector(`[data-error-for="${target.field}"]`);
      const input = form.querySelector(`[data-setting="${target.field}"]`);
      if (note) { note.textContent = message; note.hidden = false; }
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }

  /** Fill the settings with a recipe of mlitb/recipes.py: the optimizer, its hyperparameters,
   * the training settings and T; what the recipe leaves out is emptied (the defaults). */
  function useRecipe(key) {
    const recipe = RECIPES[key];
    if (!recipe) return;
    design.optimizer = recipe.optimizer;
    $("#create-optimizer").value = recipe.optimizer;
    renderOptimizer();
    const set = (group, values) => {
      for (const el of document.querySelectorAll(`#create-form [data-setting^="${group}."]`)) {
        const value = values[el.dataset.setting.slice(group.length + 1)];
        el.value = value === undefined ? "" : String(value);
      }
    };
    set("hyperparameters", recipe.hyperparameters);
    set("training", recipe.training);
    $("#create-t").value = String(recipe.iterationTime);
    showAlgorithmFields();
    checkSettings();
  }

  async function create(event) {
    event.preventDefault();
    const form = $("#create-form"), out = $("#create-result"), shown = $("#create-tokens");
    clearRefusals(form);
    shown.hidden = true;
    const name = $("#create-name").value.trim();
    const joinToken = $("#create-join-token").checked ? newToken() : null;
    const contributorToken = $("#create-contributor-token").checked ? newToken() : null;
    const message = createMessage({
      name, rows: design.rows, zoo: design.zoo ? design.zoo.name : null,
      iterationTime: $("#create-t").value, optimizer: design.optimizer,
      hyperparameters: hyperparametersFrom(texts("hyperparameters")), training: trainingFrom(texts("training")),
      labels: $("#create-labels").value, samplesPerIteration: $("#create-samples").value,
      joinToken, contributorToken,
    });
    out.textContent = `creating ${name}…`;
    out.dataset.status = "pending";
    try {
      await request(message);
      out.textContent = `Created project ${name}: upload its data below, then add trainers.`;
      out.dataset.status = "ok";
      showTokens(name, joinToken, contributorToken);
      await ctx.refreshProjects();
      ctx.selectProject(name, false);
    } catch (err) {
      showRefusal(form, out, err.message, err.code === "project_exists" ? "name" : null);
    }
  }

  /** The new project's tokens, once: the master keeps only their hashes. */
  function showTokens(name, join, contribute) {
    const shown = $("#create-tokens");
    const rows = [];
    const page = `${location.origin}${location.pathname}`;
    if (join) {
      rows.push(h("p", {}, "Join token ", h("code", { "data-token": "join" }, join), " — nodes: ",
        h("code", {}, `mlitb node join ${state.link.url} --project ${name} --token ${join}`),
        "; browsers: ", h("code", {}, `${page}?project=${encodeURIComponent(name)}&join=${encodeURIComponent(join)}`)));
    }
    if (contribute) {
      rows.push(h("p", {}, "Contributor token ", h("code", { "data-token": "contributor" }, contribute),
        " — uploads without the operator token: ",
        h("code", {}, `${page}?project=${encodeURIComponent(name)}&contribute=${encodeURIComponent(contribute)}`)));
    }
    if (!rows.length) return;
    rows.push(h("p", { class: "hint" }, "Shown once: copy them now (the master keeps only their hashes)."));
    shown.replaceChildren(...rows);
    shown.hidden = false;
  }

  // -- run the selected project -----------------------------------------------------------------
  function summary() { return state.projects.find((p) => p.name === state.project) || null; }

  function renderOperate() {
    const project = state.project, st = state.status, p = summary();
    $("#operate-none").hidden = Boolean(project);
    $("#operate-body").hidden = !project;
    $("#operate-project").textContent = project || "";
    if (!project) return;
    const projectState = st ? st.state : p ? p.state : "";
    const pause = $("#op-pause");
    pause.textContent = projectState === "paused" ? "Resume" : "Pause";
    pause.dataset.action = projectState === "paused" ? "resume" : "pause";
    $("#op-facts").textContent = st
      ? `${projectState} · iteration ${fmt.int(st.iteration)} · T ${st.iteration_time} s · ${st.optimizer} · ${fmt.int(st.data.total)} train, ${fmt.int(st.data.test)} test ids`
      : p ? `${p.state} · iteration ${fmt.int(p.iteration)}` : "";
    renderLive(st);
    renderOperatorWorkers(st);
    const del = $("#op-delete");
    del.textContent = design.deleting === project ? `Delete ${project} for good` : "Delete the project…";
    del.classList.toggle("danger", design.deleting === project);
  }

  let shownLive = null;
  /** T, the hyperparameters and the training settings a running project may change (not its
   * algorithm or wire); each placeholder is the value now, an empty field leaves it as it is. */
  function renderLive(st) {
    const key = st ? JSON.stringify([st.name, st.optimizer, st.hyperparameters, st.iteration_time, st.training]) : null;
    if (key === shownLive) return;
    shownLive = key;
    const fields = $("#live-fields");
    const keep = Object.fromEntries([...fields.querySelectorAll("input, select")].map((el) => [el.name, el.value]));
    if (!st) { fields.replaceChildren(); return; }
    const field = (name, label, current) => h("label", { class: "field" }, h("span", {}, label),
      h("input", { type: "text", size: 8, name, "data-live": name, placeholder: String(current), value: keep[name] || "" }));
    const training = st.training || {};
    const algorithm = training.algorithm || "gradient";
    const settings = TRAINING_FIELDS.filter((f) => !["algorithm", "wire"].includes(f.key) &&
      (!f.only || f.only === algorithm))
      .map((f) => {
        const name = `training.${f.key}`, current = training[f.key] ?? "none";
        if (!f.choices) return field(name, f.label, current);
        const select = h("select", { name, "data-live": name, "aria-label": f.label },
          ...f.choices.map((c) => h("option", { value: c }, c ? c : `unchanged (${current})`)));
        select.value = keep[name] || "";
        return h("label", { class: "field" }, h("span", {}, f.label), select);
      });
    fields.replaceChildren(field("iteration_time", "T (s)", st.iteration_time),
      ...Object.entries(st.hyperparameters).map(([k, v]) => field(k, k, v)), ...settings);
  }

  let shownWorkers = null;
  function renderOperatorWorkers(st) {
    const workers = st ? st.workers : [];
    const key = JSON.stringify(workers.map((w) => [w.worker_id, w.role, w.state, w.client, w.host]));
    if (key === shownWorkers) return;
    shownWorkers = key;
    const body = $("#op-workers tbody");
    if (!workers.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "hint" }, "no workers on this project")));
      return;
    }
    body.replaceChildren(...workers.map((w) => h("tr", { "data-worker": w.worker_id },
      h("td", {}, w.worker_id), h("td", {}, w.role), h("td", {}, h("span", { class: `badge ${w.state}` }, w.state)),
      h("td", { class: "host" }, `${w.client} · ${w.host}`),
      h("td", {}, h("button", { type: "button", class: "remove-worker", onclick: () => removeWorker(w.worker_id) }, "Remove")))));
  }

  async function operate(out, what, message) {
    out.textContent = `${what}…`;
    out.dataset.status = "pending";
    try {
      await request(message);
      out.textContent = `${what}: done`;
      out.dataset.status = "ok";
      return true;
    } catch (err) {
      out.textContent = `${what}: refused: ${err.message}`;
      out.dataset.status = "error";
      return false;
    }
  }

  async function togglePause() {
    const action = $("#op-pause").dataset.action;
    await operate($("#op-result"), `${action === "pause" ? "pausing" : "resuming"} ${state.project}`,
      { type: action, project: state.project });
  }

  async function applyLive(event) {
    event.preventDefault();
    const changes = {}, training = {}, message = { type: "set_hyperparameters", project: state.project };
    const inputs = document.querySelectorAll("#live-fields input, #live-fields select");
    for (const el of inputs) {
      const value = parseValue(el.value);
      if (value === undefined) continue;
      if (el.name === "iteration_time") message.iteration_time = value;
      else if (el.name.startsWith("training.")) training[el.name.slice("training.".length)] = value;
      else changes[el.name] = value;
    }
    message.hyperparameters = changes;
    // The master takes whole training settings: the project's now, with what was typed on top.
    if (Object.keys(training).length) {
      const st = state.status && state.status.name === state.project ? state.status : null;
      message.training = { ...(st?.training || {}), ...training };
    }
    if (await operate($("#live-result"), `changing ${state.project}`, message)) {
      for (const el of inputs) el.value = "";
    }
  }

  function removeWorker(id) {
    operate($("#op-result"), `removing worker ${id}`, { type: "remove_worker", worker_id: id });
  }

  async function deleteProject() {
    const project = state.project;
    if (design.deleting !== project) { design.deleting = project; renderOperate(); return; }
    design.deleting = null;
    if (await operate($("#op-result"), `deleting ${project}`, { type: "delete_project", project })) {
      await ctx.refreshProjects();
    }
    renderOperate();
  }

  // -- upload -------------------------------------------------------------------------------------
  /** Two stages, as the console's upload dialog shows them: the bytes going out (the bar fills),
   * then the data server decoding and storing the images until it answers. */
  function upload(event) {
    event.preventDefault();
    const file = $("#zip-file").files[0], out = $("#upload-status"), bar = $("#upload-progress");
    const p = summary();
    if (!file) { out.textContent = "Choose a zip file first (one folder per label)."; return; }
    if (!p || !p.input_shape) { out.textContent = "The project's input shape is not known yet."; return; }
    const [channels, height, width] = p.input_shape;
    const split = $("#zip-split").value;
    const q = new URLSearchParams({ split, width, height, channels });
    const xhr = new XMLHttpRequest();
    design.upload = xhr;
    const stage = (name, text) => { out.dataset.stage = name; out.textContent = text; };
    let since = 0, timer = null;
    const stop = () => { clearInterval(timer); timer = null; design.upload = null; $("#upload-button").disabled = false; };
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      stage("sending", `sent ${(e.loaded / 1e6).toFixed(1)} of ${(e.total / 1e6).toFixed(1)} MB`);
    };
    xhr.upload.onload = () => {
      since = Date.now();
      bar.removeAttribute("value"); // a moving bar: no more bytes to count
      const show = () => stage("decoding", `uploaded ${(file.size / 1e6).toFixed(1)} MB; the data server is decoding and storing the images … ${Math.round((Date.now() - since) / 1000)} s`);
      show();
      timer = setInterval(show, 250);
    };
    xhr.onload = () => {
      stop();
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) {
        bar.max = 1;
        bar.value = 1;
        stage("done", `stored ${fmt.int(body.count)} ${split} images of ${body.labels.length} labels (ids ${body.ids[0]}–${body.ids[1]})`);
        ctx.refreshProjects();
      } else {
        bar.value = 0;
        stage("failed", `refused (HTTP ${xhr.status}): ${body.error || xhr.statusText}`);
      }
    };
    xhr.onerror = () => { stop(); stage("failed", "the upload failed: the data server could not be reached"); };
    xhr.open("POST", `${ctx.dataBase()}/projects/${encodeURIComponent(state.project)}/uploads?${q}`);
    xhr.setRequestHeader("Content-Type", "application/zip");
    xhr.setRequestHeader("Authorization", `Bearer ${tokens.operator()}`);
    $("#upload-button").disabled = true;
    bar.value = 0;
    stage("sending", `sending ${file.name}…`);
    xhr.send(file);
  }

  // -- start --------------------------------------------------------------------------------------
  $("#add-type").replaceChildren(...LAYER_TYPES.map((t) => h("option", { value: t, selected: t === "conv" }, t)));
  $("#add-layer").addEventListener("click", () => {
    // Before the loss layer, where a new hidden layer belongs; at the end without one.
    const type = $("#add-type").value, rows = design.rows;
    const last = rows.length ? rows[rows.length - 1].type : null;
    const at = ["softmax", "svm", "regression"].includes(last) && type !== "input" ? rows.length - 1 : type === "input" ? 0 : rows.length;
    rows.splice(at, 0, newLayer(type));
    renderLayers();
  });
  $("#clear-layers").addEventListener("click", () => useRows([]));
  $("#zoo-mode-leave").addEventListener("click", () => useRows(design.rows));
  $("#preset-load").addEventListener("click", loadPreset);
  $("#spec-file").addEventListener("change", importFile);
  $("#spec-export").addEventListener("click", exportFile);
  $("#create-optimizer").replaceChildren(...OPTIMIZERS.map((o) => h("option", { value: o, selected: o === design.optimizer }, o)));
  $("#create-optimizer").addEventListener("change", (e) => { design.optimizer = e.target.value; renderOptimizer(); checkSettings(); });
  $("#hp-fields").addEventListener("input", checkSettings);
  $("#create-form").addEventListener("submit", create);
  $("#create-recipe").replaceChildren(h("option", { value: "" }, "— none —"),
    ...Object.entries(RECIPES).map(([k, r]) => h("option", { value: k }, r.title)));
  $("#create-recipe").addEventListener("change", (e) => useRecipe(e.target.value));
  $("#create-form").addEventListener("change", (e) => { if (e.target.dataset.setting === "training.algorithm") showAlgorithmFields(); });
  $("#op-login").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#op-token").value;
    tokens.setOperator(token);
    $("#op-token").value = "";
    signIn(token);
  });
  $("#op-logout").addEventListener("click", () => { tokens.setOperator(""); signIn(""); });
  $("#op-pause").addEventListener("click", togglePause);
  $("#live-form").addEventListener("submit", applyLive);
  $("#op-delete").addEventListener("click", deleteProject);
  $("#upload-form").addEventListener("submit", upload);
  renderOptimizer();
  renderTrainingFields();
  renderLayers();

  let started = false;
  function render() {
    if (state.view !== "design") return;
    if (!started && state.link && state.link.url) {
      started = true;
      if (tokens.operator()) signIn(tokens.operator());
      else renderLogin();
    }
    renderPresets();
    renderOperate();
  }
  return { render };
}
