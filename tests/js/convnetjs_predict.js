#!/usr/bin/env node
// Run a ConvNetJS 0.3 net on a list of input Vols, in ConvNetJS itself.
//
//   node convnetjs_predict.js NET.json INPUTS.json [NODE_MODULES_DIR]
//
// NET.json holds what Net.toJSON() writes ({"layers": [...]}); INPUTS.json a list of Vols
// ({sx, sy, depth, w}, w a list or ConvNetJS's {"0": ..} object). Prints one JSON object:
// {"outputs": [[..], ..], "net": <the loaded net's own toJSON()>}, the outputs in test mode.
// ConvNetJS is loaded from NODE_MODULES_DIR/convnetjs, else from $MLITB_CONVNETJS (the package
// directory), else by the usual require("convnetjs") from this directory.
"use strict";
const fs = require("fs");
const path = require("path");

function loadConvnetjs(nodeModules) {
  if (nodeModules) return require(path.resolve(nodeModules, "convnetjs"));
  if (process.env.MLITB_CONVNETJS) return require(path.resolve(process.env.MLITB_CONVNETJS));
  return require("convnetjs");
}

function toVol(convnetjs, json) {
  const v = new convnetjs.Vol(json.sx, json.sy, json.depth, 0.0);
  v.fromJSON(json);
  return v;
}

const [netPath, inputsPath, nodeModules] = process.argv.slice(2);
if (!netPath || !inputsPath) {
  console.error("usage: node convnetjs_predict.js NET.json INPUTS.json [NODE_MODULES_DIR]");
  process.exit(2);
}
const convnetjs = loadConvnetjs(nodeModules);
const net = new convnetjs.Net();
net.fromJSON(JSON.parse(fs.readFileSync(netPath, "utf8")));
const outputs = JSON.parse(fs.readFileSync(inputsPath, "utf8")).map(
  (json) => Array.from(net.forward(toVol(convnetjs, json), false).w));
process.stdout.write(JSON.stringify({ outputs: outputs, net: net.toJSON() }));
