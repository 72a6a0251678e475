// One worker of the browser client, run as a module Web Worker so the page never blocks: a
// trainer (or a stats worker) with its own WebSocket to the master, its own network and its own
// data cache. It follows docs/protocol.md exactly as the Python node does (mlitb/nodes/_worker.py is
// the reference client):
//
//   hello(role, project) -> welcome(spec, labels, data_url) -> build the Net
//   allocation(added, removed) -> fetch the ids from the data server in batches -> cache_report
//   PARAMETERS frame (version v) + work(v, seconds | samples)
//       gradient project: the gradient sum over random cached batches until the budget is
//          spent (the clock is checked between small batches)
//       local project: inner optimizer steps on batches of batch_size until the budget is
//          spent; the parameter delta (mlitb/training/_compute.py compute_local is the reference)
//       (batches augmented by the project's shift/flip) -> one RESULT frame per order, always
//   project_changed -> rebuild the Net (a new label grew the output layer)
//   stats role: evaluate each new parameter version on the cached test ids -> stats_report
//   bye / close: final codes stop the worker; others reconnect with backoff
//
// The page talks to it with postMessage: {cmd: "start", url, project, role, pageOrigin, host} and
// {cmd: "stop"}; it answers {type: "status", ...} snapshots and {type: "log", level, text}.

import { Net, Random, augment, makeOptimizer } from "./engine/index.js";
import { DataCache } from "./lib/cache.js";
import {
  CLOSE, ErrorFeedback, FINAL_CLOSE_CODES, MAX_STEPS, RESULT_KIND, decodeDataBatch,
  decodeParameters, describeClose, encodeResult, formatIds, hello, reachable, resultEncoding,
  sameServer,
} from "./lib/protocol.js";

const MAX_BATCH = 32; // as mlitb/training/_compute.py: big enough for the engine, small enough for a budget
const FIRST_BATCH = 8;
const HELLO_TIMEOUT_MS = 10_000;
const REQUEST_BYTES = 4 << 20; // per data request: the cache fills in steps, training starts early
const MAX_IDS_PER_MESSAGE = 65536;
const KEEP_INACTIVE_BYTES = 64 << 20; // ids no longer allocated stay cached up to this much

let options = null; // {url, project, role, joinToken, pageOrigin, host}
let stopping = false;
let session = null; // the current connection's state
let net = null, info = null, cache = null, cacheKey = null; // kept across connections
// A local project's inner optimizer: its state (momentum, Adam's moments and step count, ...)
// carries over from round to round, as the Python node's does. It starts from zero when this
// worker (re)joins, when the project's optimizer or the parameter count changes, and in every
// deterministic round.
let inner = null, innerKey = null;
// Compressed results (training.wire float16 / int8): what encoding lost goes out with the next
// result, as on the Python node (mlitb/training/_feedback.py). Reset when this worker (re)joins.
const feedback = new ErrorFeedback();
const augmentRandom = new Random(); // augmentation draws under time budgets (seeded at random)
let attempt = 0, lastReason = "";
const pacer = { rate: null, update(samples, seconds) {
  if (samples <= 0 || seconds <= 0) return;
  const measured = samples / seconds;
  this.rate = this.rate === null ? measured : 0.7 * this.rate + 0.3 * measured;
} };
const status = {
  phase: "starting", workerId: null, project: null, iteration: null, parameterVersion: null,
  allocated: 0, cached: 0, results: 0, samplesPerS: null, loss: null, testError: null,
  message: "", simd: null, dataUrl: null, algorithm: null, steps: null, wire: null,
  // What it gave: samples in all (this page's session), in its last result and for which
  // iteration, that result's accuracy, and [iteration, samples] of its last GIVEN_KEPT results.
  samples: 0, lastSamples: null, lastIteration: null, accuracy: null, given: [],
};
const GIVEN_KEPT = 50;

/** The project's training settings (older masters send none: the paper's gradient algorithm). */
const DEFAULT_TRAINING = { algorithm: "gradient", batch_size: 32, shift: 0, flip: false,
  wire: "float32" };
const trainingOf = (p) => ({ ...DEFAULT_TRAINING, ...(p && p.training) });

// -- talking to the page ------------------------------------------------------------------------
function post(changes = {}) {
  Object.assign(status, changes);
  if (cache) Object.assign(status, { allocated: cache.allocated, cached: cache.cachedAllocated });
  self.postMessage({ type: "status", ...status });
}
function log(level, text) { self.postMessage({ type: "log", level, text }); }

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.cmd === "start" && options === null) {
    options = msg;
    connect();
  } else if (msg.cmd === "stop") {
    stop(msg.reason || "removed by the contributor");
  }
};

function stop(reason) {
  stopping = true;
  const ws = session && session.ws;
  post({ phase: "stopped", message: reason });
  if (ws && ws.readyState <= WebSocket.OPEN) {
    ws.onclose = () => self.postMessage({ type: "ended" });
    ws.close(CLOSE.NORMAL, "the contributor stopped this worker");
    setTimeout(() => self.postMessage({ type: "ended" }), 2000);
  } else {
    self.postMessage({ type: "ended" });
  }
}

// -- connections --------------------------------------------------------------------------------
function phase() {
  if (!cache || cache.allocated === 0) return "idle";
  if (cache.cachedAllocated < cache.allocated) return "caching";
  return options.role === "trainer" ? "training" : "evaluating";
}

function connect() {
  if (stopping) return;
  post({ phase: "connecting", workerId: null, message: `connecting to ${options.url}` });
  let ws;
  try {
    ws = new WebSocket(options.url);
  } catch (err) {
    ended(null, `cannot connect to ${options.url}: ${err.message}`, null);
    return;
  }
  ws.binaryType = "arraybuffer";
  const s = { ws, welcomed: false, params: null, work: [], scheduled: false, want: new Set(),
    downloading: false, bye: null, error: null, firstAllocation: true, evaluated: null, ended: false };
  session = s;
  s.helloTimer = setTimeout(() => {
    if (!s.welcomed) { s.error = "no welcome from the master in time"; ws.close(CLOSE.NORMAL); }
  }, HELLO_TIMEOUT_MS);
  ws.onopen = () => ws.send(hello(options.role, { project: options.project, joinToken: options.joinToken, host: options.host }));
  ws.onmessage = (event) => {
    if (session !== s || s.ended) return;
    try {
      if (typeof event.data === "string") onText(s, JSON.parse(event.data));
      else onFrame(s, event.data);
    } catch (err) {
      if (err instanceof SessionEnd) { finish(s, err.reason, err.final); return; }
      log("warning", `ignored an invalid message from the master: ${err.message}`);
    }
  };
  ws.onerror = () => {}; // the close event follows with the code
  ws.onclose = (event) => {
    if (session !== s || s.ended) return;
    const why = s.bye ? s.bye.message || s.bye.reason : s.error;
    let text = describeClose(event.code, why || event.reason);
    if (s.bye) text += ` (bye: ${s.bye.reason})`;
    if (!s.welcomed && event.code === CLOSE.ABNORMAL) text = `cannot reach the master at ${options.url}`;
    const final = FINAL_CLOSE_CODES.has(event.code);
    finish(s, final ? `the master closed the connection: ${text}` : `the connection closed: ${text}`, final);
  };
}

class SessionEnd extends Error {
  constructor(reason, final) { super(reason); this.reason = reason; this.final = final; }
}

function finish(s, reason, final) {
  if (s.ended) return;
  s.ended = true;
  clearTimeout(s.helloTimer);
  if (s.ws.readyState <= WebSocket.OPEN) s.ws.close(CLOSE.NORMAL);
  ended(s, reason, final);
}

function ended(s, reason, final) {
  if (stopping) return;
  if (final) {
    log("error", reason);
    post({ phase: "stopped", workerId: null, message: reason });
    self.postMessage({ type: "ended", reason });
    return;
  }
  const delay = Math.min(10, 0.5 * 2 ** Math.min(attempt, 30)) * (0.5 + 0.5 * Math.random());
  attempt++;
  log(reason === lastReason ? "debug" : "warning", `${reason}; reconnecting in ${delay.toFixed(1)} s`);
  lastReason = reason;
  post({ phase: "waiting", workerId: null, message: `${reason}; reconnecting in ${delay.toFixed(1)} s` });
  setTimeout(connect, delay * 1000);
}

function send(s, data) {
  if (session === s && !s.ended && s.ws.readyState === WebSocket.OPEN) s.ws.send(data);
}

// -- messages -------------------------------------------------------------------------------------
function onText(s, msg) {
  if (!s.welcomed) {
    if (msg.type === "error") { s.error = msg.message; return; } // the close follows
    if (msg.type !== "welcome") throw new SessionEnd(`the master answered the hello with ${msg.type}`, false);
    if (!msg.project || msg.role !== options.role) throw new SessionEnd("the master's welcome does not match the hello", true);
    onWelcome(s, msg);
    return;
  }
  switch (msg.type) {
    case "work": s.work.push(msg); schedule(s); break;
    case "allocation": onAllocation(s, msg); break;
    case "project_changed": onProjectChanged(s, msg.project); break;
    case "data_servers": useDataServers(s, msg.data_urls); break;
    case "bye":
      s.bye = msg;
      log("warning", `the master says bye (${msg.reason})${msg.message ? ": " + msg.message : ""}`);
      break;
    case "error":
      s.error = msg.message;
      log(msg.code === "stale_result" ? "debug" : "warning", `the master refused something (${msg.code}): ${msg.message}`);
      break;
    default: log("debug", `ignored a ${msg.type} message`);
  }
}

function onWelcome(s, welcome) {
  clearTimeout(s.helloTimer);
  s.welcomed = true;
  attempt = 0;
  lastReason = "";
  useDataServers(s, welcome.data_urls && welcome.data_urls.length ? welcome.data_urls
    : welcome.data_url ? [welcome.data_url] : []);
  applyProject(welcome.project);
  inner = null; innerKey = null; // a joiner's inner optimizer starts from zero
  feedback.reset(); // another worker id: a new stream of results
  cache.clearAllocation();
  s.maxIds = null;
  log("info", `joined project ${welcome.project.name} as ${options.role} ${welcome.worker_id} ` +
    `(${welcome.project.parameter_count} parameters, T=${welcome.project.iteration_time} s)`);
  post({ phase: phase(), workerId: welcome.worker_id, project: welcome.project.name,
    iteration: welcome.project.iteration, parameterVersion: null, results: 0, message: "",
    simd: net.simd, dataUrl: s.dataUrl, algorithm: trainingOf(info).algorithm, steps: null,
    wire: trainingOf(info).wire });
}

/** The data servers the master announces (the one to use first), as this browser reaches them;
 * the page's own origin stands for the server that served the page (same origin, no CORS). The
 * one in use stays while it is still announced; a failed download moves to the next. */
function useDataServers(s, urls) {
  const host = new URL(options.url).hostname;
  const reached = urls.map((u) => {
    const url = reachable(u, host);
    return sameServer(url, options.pageOrigin) ? options.pageOrigin : url;
  });
  s.dataUrls = reached.length ? reached : [options.pageOrigin];
  if (!s.dataUrl || !s.dataUrls.includes(s.dataUrl)) {
    s.dataUrl = s.dataUrls[0];
    s.maxIds = null;
  }
  post({ dataUrl: s.dataUrl });
}

function nextDataServer(s, why) {
  if (s.dataUrls.length < 2) return;
  const from = s.dataUrl;
  s.dataUrl = s.dataUrls[(s.dataUrls.indexOf(from) + 1) % s.dataUrls.length];
  s.maxIds = null;
  log("warning", `data server ${from} failed (${why}); trying ${s.dataUrl}`);
  post({ dataUrl: s.dataUrl });
}

const shapeOf = (p) => [p.spec[0].out_depth, p.spec[0].out_sy, p.spec[0].out_sx];

function applyProject(p) {
  let built;
  try {
    built = new Net(p.spec);
  } catch (err) {
    throw new SessionEnd(`cannot build the project's network: ${err.message}`, true);
  }
  if (built.numParams !== p.parameter_count) {
    throw new SessionEnd(`the project's network has ${built.numParams} parameters here, the master says ${p.parameter_count}`, true);
  }
  net = built;
  info = p;
  const key = `${p.name}|${shapeOf(p).join("x")}`;
  if (key !== cacheKey) {
    cache = new DataCache(shapeOf(p));
    cacheKey = key;
  }
}

function onProjectChanged(s, p) {
  if (info && JSON.stringify([info.spec, info.labels]) === JSON.stringify([p.spec, p.labels])) {
    info = p; // state, T or iteration only
  } else {
    const before = cache;
    applyProject(p);
    if (s.params && s.params.vector.length !== net.numParams) s.params = null;
    if (cache !== before) {
      log("warning", "the project's input shape changed: cache dropped");
      if (before && before.count) reportCache(s, [], before.cachedIds());
      s.want.clear();
    }
    log("info", `project ${p.name} changed: ${p.labels.length} labels, ${p.parameter_count} parameters`);
  }
  for (const id of cache.missing()) s.want.add(id); // e.g. ids skipped for an unknown label
  if (s.want.size) download(s);
  post({ phase: phase(), algorithm: trainingOf(info).algorithm });
}

function onFrame(s, buf) {
  if (!s.welcomed) throw new SessionEnd("the master sent a binary frame before its welcome", false);
  const frame = decodeParameters(buf, info.parameter_count);
  s.params = frame;
  post({ parameterVersion: frame.parameterVersion, iteration: frame.iteration });
  if (options.role === "stats") schedule(s);
}

function reportCache(s, cached, evicted) {
  for (let i = 0; i < Math.max(cached.length, evicted.length); i += MAX_IDS_PER_MESSAGE) {
    send(s, JSON.stringify({ type: "cache_report", cached: cached.slice(i, i + MAX_IDS_PER_MESSAGE),
      evicted: evicted.slice(i, i + MAX_IDS_PER_MESSAGE) }));
  }
}

function onAllocation(s, msg) {
  for (const id of msg.removed) s.want.delete(id);
  const need = cache.allocate(msg.added, msg.removed);
  for (const id of need) s.want.add(id);
  if (s.firstAllocation) {
    s.firstAllocation = false; // a new connection: tell the master everything this worker holds
    reportCache(s, cache.cachedIds(), []);
  } else {
    const needed = new Set(need);
    reportCache(s, msg.added.filter((id) => !needed.has(id)), []);
  }
  const evicted = cache.evictInactive(KEEP_INACTIVE_BYTES);
  if (evicted.length) reportCache(s, [], evicted);
  if (s.want.size) download(s);
  if (options.role === "stats") schedule(s);
  post({ phase: phase() });
}

// -- data -----------------------------------------------------------------------------------------
/** A join-token project keeps its data to its trainers: the token goes with every read. */
function readHeaders(headers = {}) {
  return options.joinToken ? { ...headers, Authorization: `Bearer ${options.joinToken}` } : headers;
}

async function maxIds(s) {
  if (s.maxIds === null) {
    let limit = 16384;
    try {
      const r = await fetch(`${s.dataUrl}/projects/${encodeURIComponent(info.name)}`, { headers: readHeaders() });
      if (r.ok) limit = (await r.json()).max_batch_ids || limit;
    } catch { /* the batch request will say what is wrong */ }
    s.maxIds = Math.max(16, Math.min(limit, Math.floor(REQUEST_BYTES / (cache.size + 8))));
  }
  return s.maxIds;
}

async function download(s) {
  if (s.downloading) return;
  s.downloading = true;
  let failures = 0;
  try {
    while (session === s && !s.ended && s.want.size) {
      const limit = await maxIds(s);
      const before = cache, batch = [];
      for (const id of s.want) {
        if (batch.length >= limit) break;
        s.want.delete(id);
        if (cache.allocation.has(id) && !cache.has(id)) batch.push(id);
      }
      if (!batch.length) continue;
      let frame;
      try {
        const r = await fetch(`${s.dataUrl}/projects/${encodeURIComponent(info.name)}/batch`, {
          method: "POST", body: formatIds(batch), headers: readHeaders({ "Content-Type": "text/plain" }) });
        if (!r.ok) {
          let text = `HTTP ${r.status}`;
          try { text += ": " + (await r.json()).error; } catch { /* not JSON */ }
          const error = new Error(`the data server refused ids ${formatIds(batch).slice(0, 40)}: ${text}`);
          error.permanent = r.status >= 400 && r.status < 500;
          throw error;
        }
        frame = decodeDataBatch(await r.arrayBuffer());
      } catch (err) {
        if (err.permanent) { log("error", `${err.message}; skipping ${batch.length} ids`); continue; }
        for (const id of batch) s.want.add(id);
        failures++;
        nextDataServer(s, err.message);
        const delay = Math.min(10, 2 ** Math.min(failures - 1, 5));
        log("warning", `data download failed (${err.message}); retrying in ${delay} s`);
        await new Promise((resolve) => setTimeout(resolve, delay * 1000));
        continue;
      }
      failures = 0;
      if (cache !== before || session !== s) continue; // the project changed shape meanwhile
      const classes = net.isClassifier ? net.numOutputs : 0;
      const accept = (i) => classes === 0 || frame.labels[i] < classes;
      const added = cache.add(frame.ids, frame.labels, frame.pixels, accept);
      const skipped = frame.ids.length - added.length;
      if (skipped && classes) {
        let unknown = 0;
        for (let i = 0; i < frame.labels.length; i++) if (frame.labels[i] >= classes) unknown++;
        if (unknown) log("warning", `${unknown} ids have a label the network does not know yet; they wait for the project to change`);
      }
      reportCache(s, added, []);
      post({ phase: phase() });
      if (options.role === "stats") schedule(s);
    }
  } finally {
    s.downloading = false;
  }
}

// -- computing ------------------------------------------------------------------------------------
function schedule(s) {
  if (s.scheduled) return;
  s.scheduled = true;
  setTimeout(() => {
    s.scheduled = false;
    if (session !== s || s.ended || stopping) return;
    if (options.role === "trainer") answerWork(s);
    else if (options.role === "stats") evaluateLatest(s);
  }, 0);
}

function answerWork(s) {
  while (s.work.length) {
    const order = s.work.shift();
    // Orders that piled up behind a long computation are stale: each still gets one (empty)
    // result, and the newest is computed.
    const result = s.work.length ? emptyResult(0) : compute(s, order);
    const training = trainingOf(info), local = training.algorithm === "local";
    const encoding = resultEncoding(training.wire);
    // A result of nothing (0 samples) is the zero vector as it is, and keeps the residual.
    const vector = result.samples
      ? feedback.encode(result.vector, encoding, order.parameter_version) : result.vector;
    send(s, encodeResult(vector, { parameterVersion: order.parameter_version,
      samples: result.samples, correct: result.correct, lossSum: result.lossSum,
      computeSeconds: result.computeSeconds, steps: result.steps,
      kind: local ? RESULT_KIND.PARAMETER_DELTA : RESULT_KIND.GRADIENT_SUM, encoding }));
    // What this trainer gave: the page shows it beside the master's totals per iteration.
    const given = [...status.given, [order.iteration, result.samples]].slice(-GIVEN_KEPT);
    const changes = { results: status.results + 1, iteration: order.iteration, phase: phase(),
      steps: local ? result.steps : null, samples: status.samples + result.samples,
      lastSamples: result.samples, lastIteration: order.iteration, given };
    if (result.samples) {
      changes.loss = result.lossSum / result.samples;
      changes.accuracy = result.correct / result.samples;
      if (result.computeSeconds > 0) changes.samplesPerS = result.samples / result.computeSeconds;
    }
    post(changes);
  }
}

function emptyResult(seconds) {
  return { samples: 0, correct: 0, lossSum: 0, computeSeconds: seconds, steps: 0,
    vector: new Float32Array(info ? info.parameter_count : 0) };
}

let scratch = null;
/** Batch buffers for `batch` samples of `size` values: inputs, targets and augmented inputs. */
function buffers(size, batch) {
  if (!scratch || scratch.size !== size || scratch.batch < batch) {
    scratch = { size, batch, x: new Float32Array(batch * size), t: new Int32Array(batch),
      augmented: new Float32Array(batch * size) };
  }
  return scratch;
}

/** This round's inner optimizer (mlitb/nodes/_roles.py, Trainer._inner_optimizer): the one kept from the last
 * round with the project's current hyperparameters, or a new one (first round, another optimizer
 * or parameter count, or `fresh`). The master's schedule sets each round's learning rate, so the
 * optimizer's own step decay (lr_decay) is left out. Throws OptimizerError. */
function innerOptimizer(fresh) {
  const hp = { ...info.hyperparameters };
  delete hp.lr_decay;
  const key = `${info.optimizer}|${net.numParams}`;
  if (fresh || inner === null || innerKey !== key) {
    const [l1Mul, l2Mul] = net.decayMultipliers(); // biases 0, as in ConvNetJS
    inner = makeOptimizer(info.optimizer, net.numParams, hp, { l1Mul, l2Mul });
    innerKey = key;
  } else {
    inner.setHyperparameters(hp);
  }
  return inner;
}

const allFinite = (a) => { for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false; return true; };

function shuffled(rows, random) {
  const a = Int32Array.from(rows);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function seeded(seed) { // mulberry32: deterministic orders for work orders given in samples
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), 1 | t);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One work order (mlitb/training/_compute.py): as many cached samples as the budget allows, in random
 * batches (or exactly `order.samples` in deterministic mode), each augmented by the project's
 * shift/flip. A gradient project sums the gradient over them; a local project takes one inner
 * optimizer step per batch (gradient / n, the round's learning rate) and answers with the
 * parameter delta and the number of steps. Loss and accuracy are each batch's before its step.
 */
function compute(s, order) {
  const start = performance.now();
  const params = s.params;
  if (!params || params.parameterVersion !== order.parameter_version || params.vector.length !== net.numParams) {
    log("warning", `work order for parameters v${order.parameter_version}, but this worker holds ` +
      `v${params ? params.parameterVersion : null}: answering with 0 samples`);
    return emptyResult(0);
  }
  const training = trainingOf(info), local = training.algorithm === "local";
  const deterministic = Boolean(order.samples);
  net.params = params.vector;
  net.zeroGrads();
  const rows = cache.usable(net.isClassifier ? net.numOutputs : 0);
  if (!rows.length) return emptyResult((performance.now() - start) / 1000);
  let opt = null, before = null;
  if (local) {
    try {
      opt = innerOptimizer(deterministic); // deterministic rounds start from zero
      const rate = order.learning_rate ?? opt.learningRate; // else the project's rate
      opt.setHyperparameters({ learning_rate: rate });
    } catch (err) {
      log("error", `cannot take inner steps with optimizer ${info.optimizer}: ${err.message}; answering with 0 samples`);
      inner = null;
      return emptyResult((performance.now() - start) / 1000);
    }
    before = Float32Array.from(net.params);
  }
  const maxBatch = local ? training.batch_size : MAX_BATCH;
  const { x, t, augmented } = buffers(cache.size, maxBatch);
  // Augmentation's draws: the worker's generator, or in deterministic mode a stream of the
  // iteration's own (a different generator from the sample order's).
  const random = deterministic ? new Random(order.iteration).random : augmentRandom.random;
  let total = 0, correct = 0, lossSum = 0, steps = 0;
  /** One batch; false: stop the round (a diverged gradient, or the most steps one result holds). */
  const step = (batchRows) => {
    const n = batchRows.length, began = performance.now();
    cache.fill(batchRows, x, t);
    const input = augment(x, augmented, n, cache.shape, random, training).subarray(0, n * cache.size);
    if (local) net.zeroGrads();
    const stats = net.accumulateGradient(input, t.subarray(0, n));
    if (local) {
      const grads = net.grads;
      if (!allFinite(grads)) return false; // keep what the earlier steps did
      for (let i = 0; i < grads.length; i++) grads[i] /= stats.count;
      opt.step(net.params, grads);
      steps++;
    }
    pacer.update(stats.count, (performance.now() - began) / 1000);
    total += stats.count; correct += stats.correct; lossSum += stats.loss;
    return !(local && steps >= MAX_STEPS);
  };
  if (deterministic) { // exactly `samples`, passes over the ids in id order
    const sorted = Int32Array.from(rows).sort((a, b) => cache.ids[a] - cache.ids[b]);
    const orderRandom = seeded(order.iteration * 2654435761);
    let sequence = shuffled(sorted, orderRandom), at = 0;
    for (let done = 0; done < order.samples && !stopping;) {
      const n = Math.min(maxBatch, order.samples - done);
      const batch = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        if (at === sequence.length) { sequence = shuffled(sorted, orderRandom); at = 0; }
        batch[i] = sequence[at++];
      }
      if (!step(batch)) break;
      done += n;
    }
  } else {
    const budget = order.seconds;
    let sequence = shuffled(rows, Math.random), at = 0;
    for (;;) {
      const elapsed = (performance.now() - start) / 1000;
      let n = budget - elapsed <= 0 ? 0 : pacer.rate === null ? Math.min(FIRST_BATCH, maxBatch)
        : Math.max(0, Math.min(maxBatch, Math.floor((budget - elapsed) * pacer.rate)));
      if (n === 0) {
        if (total) break;
        n = 1; // at least one sample, so the master always learns this worker's speed
      }
      const batch = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        if (at === sequence.length) { sequence = shuffled(rows, Math.random); at = 0; }
        batch[i] = sequence[at++];
      }
      if (!step(batch) || stopping) break;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  let vector;
  if (local) {
    vector = new Float32Array(net.numParams);
    for (let i = 0; i < vector.length; i++) vector[i] = net.params[i] - before[i];
  } else {
    vector = new Float32Array(net.grads);
  }
  if (!Number.isFinite(lossSum) || !allFinite(vector)) { // a diverged net: the master would refuse the frame
    log("warning", `the ${local ? "parameter delta" : "gradient"} is not finite: answering with 0 samples`);
    return emptyResult(seconds);
  }
  return { samples: total, correct, lossSum: Math.max(lossSum, 0), computeSeconds: seconds, vector, steps };
}

/** Stats workers: evaluate the newest parameters on the whole cached test share. */
function evaluateLatest(s) {
  const params = s.params;
  if (!params || params.parameterVersion === s.evaluated || params.vector.length !== net.numParams ||
      !cache.allocated || cache.cachedAllocated !== cache.allocated) return;
  const rows = cache.usable(net.isClassifier ? net.numOutputs : 0);
  if (!rows.length) return;
  net.params = params.vector;
  const chunk = 256, size = cache.size, x = new Float32Array(chunk * size), t = new Int32Array(chunk);
  const start = performance.now();
  let samples = 0, correct = 0, lossSum = 0;
  for (let i = 0; i < rows.length && !stopping; i += chunk) {
    const part = rows.subarray(i, i + chunk);
    cache.fill(part, x, t);
    const r = net.evaluate(x.subarray(0, part.length * size), t.subarray(0, part.length));
    samples += r.count; correct += r.correct; lossSum += r.loss;
  }
  s.evaluated = params.parameterVersion;
  if (!samples) return;
  const error = Math.min(Math.max(1 - correct / samples, 0), 1), loss = lossSum / samples;
  const report = { type: "stats_report", parameter_version: params.parameterVersion,
    iteration: params.iteration, samples, error };
  if (Number.isFinite(loss)) report.loss = Math.max(loss, 0);
  send(s, JSON.stringify(report));
  const seconds = (performance.now() - start) / 1000;
  post({ results: status.results + 1, testError: error, loss: Number.isFinite(loss) ? loss : null,
    samplesPerS: seconds > 0 ? samples / seconds : null, phase: phase() });
}
