// node subscribe.js ENDPOINT COUNT PREFIX... -> prints COUNT events as JSON lines, then exits.
"use strict";
const { subscribe } = require("./linebus");
const [endpoint, count, ...prefixes] = process.argv.slice(2);
(async () => {
  let seen = 0;
  console.error("subscribed");
  for await (const event of subscribe(endpoint, prefixes)) {
    console.log(JSON.stringify(event, (k, v) => (typeof v === "bigint" ? Number(v) : v)));
    if (++seen >= Number(count)) process.exit(0);
  }
})();
