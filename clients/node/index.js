// linebus for Node.js: call actors and subscribe to events on a linebus line.
// docs/PROTOCOL.md in the linebus repository is the contract this package implements.
"use strict";

const { Client, Call, call } = require("./lib/client");
const { Subscriber, GapTracker, subscribe, subscribeEndpointFor } = require("./lib/subscriber");
const { curveKeys, publicOf } = require("./lib/keys");
const errors = require("./lib/errors");
const protocol = require("./lib/protocol");

module.exports = {
  Client,
  Call,
  call,
  Subscriber,
  GapTracker,
  subscribe,
  subscribeEndpointFor,
  curveKeys,
  publicOf,
  errors,
  protocol,
  ...errors,
};
