// Preloaded into the Continue CLI's Node (NODE_OPTIONS=--require) by tests/continue_cli: every
// TCP connection to anything but loopback is refused at once, before any DNS lookup, and
// "host:port" is appended to the file named by CLIBRIDGE_NET_TRAP_LOG. Node 20's fetch
// ignores HTTP(S)_PROXY, so a dead proxy cannot stop it; net.Socket.prototype.connect is
// what fetch, http, https and tls all go through.
"use strict";
const fs = require("fs");
const net = require("net");

const log = process.env.CLIBRIDGE_NET_TRAP_LOG;
const loopback = new Set(["127.0.0.1", "localhost", "::1"]);
const connect = net.Socket.prototype.connect;

net.Socket.prototype.connect = function (...args) {
  let options = Array.isArray(args[0]) ? args[0][0] : args[0];
  let host;
  let port;
  if (options !== null && typeof options === "object") {
    if (options.path) return connect.apply(this, args); // a unix socket
    host = options.host;
    port = options.port;
  } else {
    port = args[0];
    host = typeof args[1] === "string" ? args[1] : undefined;
  }
  host = host || "localhost";
  if (loopback.has(host)) return connect.apply(this, args);
  if (log) fs.appendFileSync(log, `${host}:${port}\n`);
  const error = new Error(`connect ECONNREFUSED ${host}:${port} (tests: loopback only)`);
  error.code = "ECONNREFUSED";
  process.nextTick(() => this.destroy(error));
  return this;
};
