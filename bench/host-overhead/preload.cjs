'use strict';
// node --require preload.cjs: makes require('node-gyp-build')(dir) return the fake addon.
const Module = require('module');
const path = require('path');
const fake = require(path.join(__dirname, 'fake-addon.cjs'));
globalThis.__fakeAddon = fake;
const origLoad = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === 'node-gyp-build') return function load(dir) { return fake; };
  return origLoad.apply(this, arguments);
};
