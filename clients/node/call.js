// node call.js ENDPOINT SERVICE COMMAND [JSON-ARGS] -> prints the result as JSON, exit 1 on error.
"use strict";
const { call } = require("./linebus");
const [endpoint, service, command, argsJson] = process.argv.slice(2);
call(endpoint, service, command, argsJson ? JSON.parse(argsJson) : {}, 10, (p) => console.error("progress", JSON.stringify(p)))
  .then((result) => console.log(JSON.stringify({ result })))
  .catch((err) => {
    console.log(JSON.stringify({ error: { code: err.code, message: err.message } }));
    process.exit(1);
  });
