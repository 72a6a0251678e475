// mlitb's network engine for the browser: the layers of the numpy engine (mlitb.nn), batched,
// in float32, over one flat parameter vector laid out exactly as Python's.
//
// Files (ES modules, no build step, no dependencies):
//   spec.js     desugar + normalize of makeLayers specs (same defaults and error messages)
//   net.js      Net: the flat vectors, chunked forward/backward, loss, addClass
//   layers.js   input, fc, relu, sigmoid, tanh, maxout, dropout, lrn
//   conv.js     conv and max pool        loss.js     softmax, svm, regression
//   kernels.js  matrix products and im2col/col2im: SIMD where it can, plain JS otherwise
//   simd.js     WebAssembly SIMD kernels, assembled byte by byte at load time (no .wasm file)
//   random.js   seedable uniforms and normals
//   optim.js    the optimizers of mlitb/optim.py (a `local` project's inner steps)
//   augment.js  random shifts and flips of a training batch (mlitb/training/_settings.py's augment)
//   test.html + check.js   run the numpy test vectors (tests/vectors) in a browser
//
// API
//   import { Net } from "./engine/index.js";
//   const net = new Net(spec, { params, seed, labels, chunk = 4, simd = true, fma = true });
//       spec as Python's Net takes it; simd/fma: use wasm SIMD (and relaxed SIMD's fused
//       multiply-add) where the browser has them; net.simd / net.fma tell what is used
//   describe(spec) -> { layers: [{def, raw, inShape, outShape, params}], numParams, error, at }
//       what a spec builds, checked as new Net(spec) checks it, without allocating (the designer)
//   net.numParams, net.inputShape ([C, H, W]), net.numOutputs, net.labels, net.spec()
//   net.params   Float32Array, live; `net.params = array` copies in
//   net.grads    Float32Array, live: gradient SUMS since net.zeroGrads()
//   net.accumulateGradient(x, targets, { training = true, inputGrad = null })
//       -> { loss, correct, count }   (loss summed over samples, like grads)
//   net.forward(x, training = false) / net.predict(x)  -> Float32Array (N*K) of outputs
//   net.evaluate(x, targets) -> { loss, correct, count }, grads untouched
//   net.addClass(label) -> Int32Array: new index of each old parameter
//   net.decayMultipliers() -> [l1, l2] Float32Arrays laid out as params
//   makeOptimizer(name, numParams, hyperparameters, { l1Mul, l2Mul }) -> opt;
//       opt.step(params, meanGrad): one step in place, state (opt.state, opt.t) carried over
//   augment(x, out, n, [C, H, W], random, { shift, flip }) -> out (or x when there is nothing
//       to do); drawAugmentation / shiftFlip: the draws and the transform apart
// x is a Float32Array (or any array-like) of N samples in (N, C, H, W) order; targets are N class
// indices (softmax, svm) or N*K values (regression).
//
// Flat parameter layout (docs/formats.md): layers in order; conv weights (F, C, ky, kx)
// row-major, then biases (F); fc weights (out, in) with inputs in (C, H, W) order, then biases.
//
// Inside, a chunk of samples is channels last, (n, H, W, C), in scratch buffers allocated once
// per net in one buffer (a WebAssembly.Memory's with SIMD); conv is im2col + a product, and a
// relu before a max pool runs after it, as in Python. Results agree with numpy's to float32
// rounding (the vectors' tolerance is 1e-5 relative to scale). Initial parameters follow
// ConvNetJS's distribution (normal, std sqrt(1/fan_in); biases bias_pref) but not numpy's
// random streams; dropout draws from the net's seeded generator in (n, y, x, c) order.

export { Net, DEFAULT_CHUNK, NEW_CLASS_BIAS, LAYER_CLASSES, describe } from "./net.js";
export { desugar, normalize, ModelFormatError, LAYER_TYPES, LOSS_TYPES } from "./spec.js";
export { Random } from "./random.js";
export { Optimizer, OptimizerError, OPTIMIZERS, SGD, AdaGrad, Adadelta, Adam, makeOptimizer } from "./optim.js";
export { augment, drawAugmentation, shiftFlip } from "./augment.js";
export { supported as simdSupported, fusedSupported as fmaSupported } from "./simd.js";
