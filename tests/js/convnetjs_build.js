#!/usr/bin/env node
// Build a net in ConvNetJS 0.3 from makeLayers definitions, give every weight and bias a random
// value, and run it on a list of input Vols.
//
//   node convnetjs_build.js DEFS.json INPUTS.json [NODE_MODULES_DIR]
//
// Prints one JSON object: {"net": <Net.toJSON(), exactly as ConvNetJS writes it>,
// "outputs": [[..], ..]}, the outputs of the built net in test mode. ConvNetJS is found as in
// convnetjs_predict.js.
"use strict";
const fs = require("fs");
const path = require("path");

function loadConvnetjs(nodeModules) {
  if (nodeModules) return require(path.resolve(nodeModules, "convnetjs"));
  if (process.env.MLITB_CONVNETJS) return require(path.resolve(process.env.MLITB_CONVNETJS));
  return require("convnetjs");
}

const [defsPath, inputsPath, nodeModules] = process.argv.slice(2);
if (!defsPath || !inputsPath) {
  console.error("usage: node convnetjs_build.js DEFS.json INPUTS.json [NODE_MODULES_DIR]");
  process.exit(2);
}
const convnetjs = loadConvnetjs(nodeModules);
const net = new convnetjs.Net();
net.makeLayers(JSON.parse(fs.readFileSync(defsPath, "utf8")));
for (const layer of net.layers) {  // filters start random already; biases start constant
  if (layer.biases) {
    for (let i = 0; i < layer.biases.w.length; i++) layer.biases.w[i] = convnetjs.randn(0.0, 0.5);
  }
}
const outputs = JSON.parse(fs.readFileSync(inputsPath, "utf8")).map((json) => {
  const v = new convnetjs.Vol(json.sx, json.sy, json.depth, 0.0);
  v.fromJSON(json);
  return Array.from(net.forward(v, false).w);
});
process.stdout.write(JSON.stringify({ net: net.toJSON(), outputs: outputs }));
