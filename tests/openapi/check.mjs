// check.mjs - docs/openapi.yaml is a valid OpenAPI 3.1 document, names every
// route the service has, and (given a live server's URL) describes what the
// server really answers: each response body is validated against the
// document's own schema for that operation and status.
//
//   node check.mjs ../../docs/openapi.yaml [http://127.0.0.1:PORT]
//
// Prints "PASS name" / "FAIL name: why" lines and "N passed, N failed".
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

const [specPath, base] = process.argv.slice(2);
let passed = 0;
let failed = 0;
const pass = (name) => { passed++; console.log(`PASS ${name}`); };
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${why}`); };

const spec = YAML.parse(readFileSync(specPath, "utf8"));

// 1. the document against the OpenAPI 3.1 schema
const res = await new Validator().validate(specPath);
if (res.valid) pass("openapi_schema_valid");
else fail("openapi_schema_valid", JSON.stringify(res.errors).slice(0, 2000));

// 2. every route of src/service/api.c, with its methods
const routes = {
  "/v1/evaluations": ["post", "get"],
  "/v1/evaluations/batch": ["post"],
  "/v1/evaluations/{id}": ["get"],
  "/v1/evaluations/{id}/cancel": ["post"],
  "/v1/evaluations/{id}/events": ["get"],
  "/healthz": ["get"],
  "/readyz": ["get"],
  "/metrics": ["get"],
};
for (const [p, methods] of Object.entries(routes))
  for (const m of methods) {
    if (spec.paths?.[p]?.[m]) pass(`route ${m.toUpperCase()} ${p}`);
    else fail(`route ${m.toUpperCase()} ${p}`, "missing from the document");
  }

// 3. live responses against the document
if (base) {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
  addFormats(ajv);
  ajv.addSchema(spec, "spec.json");
  const deref = (o) => {
    while (o && o.$ref) {
      const parts = o.$ref.replace(/^#\//, "").split("/");
      o = parts.reduce((a, k) => a?.[k], spec);
    }
    return o;
  };
  // the JSON schema of (path, method, status), as a pointer into the spec
  const schemaFor = (path, method, status) => {
    const op = spec.paths[path][method];
    let r = op.responses[String(status)];
    if (!r) return null;
    let ptr = `#/paths/${path.replaceAll("~", "~0").replaceAll("/", "~1")}/${method}/responses/${status}`;
    if (r.$ref) { ptr = r.$ref; r = deref(r); }
    if (!r.content?.["application/json"]) return undefined;
    return `spec.json${ptr}/content/application~1json/schema`;
  };
  const call = async (name, path, method, url, init, wantStatus) => {
    let resp, text;
    try {
      resp = await fetch(base + url, { method: method.toUpperCase(), ...init });
      text = await resp.text();
    } catch (e) {
      fail(name, `request failed: ${e}`);
      return null;
    }
    if (wantStatus && resp.status !== wantStatus) {
      fail(name, `status ${resp.status}, want ${wantStatus}: ${text.slice(0, 300)}`);
      return null;
    }
    const ptr = schemaFor(path, method, resp.status);
    if (ptr === null) { fail(name, `status ${resp.status} is not documented`); return null; }
    if (ptr === undefined) { pass(name); return text; }
    let body;
    try { body = JSON.parse(text); } catch (e) { fail(name, `not JSON: ${text.slice(0, 200)}`); return null; }
    const v = ajv.getSchema(ptr) || ajv.compile({ $ref: ptr });
    if (v(body)) pass(name);
    else fail(name, `${JSON.stringify(v.errors).slice(0, 1500)} in ${text.slice(0, 500)}`);
    return body;
  };
  const json = { "Content-Type": "application/json" };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  await call("live healthz", "/healthz", "get", "/healthz", {}, 200);
  let ready = null;
  for (let i = 0; i < 60 && !ready; i++) {
    const r = await fetch(base + "/readyz");
    if (r.status === 200) ready = true;
    else await sleep(500);
  }
  await call("live readyz", "/readyz", "get", "/readyz", {}, 200);
  const sub = await call("live submit 202", "/v1/evaluations", "post", "/v1/evaluations",
    { headers: json, body: JSON.stringify({ code: "print(1)", language: "python", metadata: { submitter: "openapi" } }) }, 202);
  let rec = null;
  if (sub) {
    for (let i = 0; i < 120; i++) {
      const r = await fetch(`${base}/v1/evaluations/${sub.id}`);
      rec = await r.json();
      if (!["queued", "running"].includes(rec.status)) break;
      await sleep(250);
    }
    await call("live get record (finished)", "/v1/evaluations/{id}", "get", `/v1/evaluations/${sub.id}`, {}, 200);
    if (rec.status === "completed" && rec.stdout === "1\n") pass("live evaluation completed with stdout 1");
    else fail("live evaluation completed with stdout 1", JSON.stringify(rec).slice(0, 500));
    await call("live cancel finished 409", "/v1/evaluations/{id}/cancel", "post", `/v1/evaluations/${sub.id}/cancel`, {}, 409);
    const ev = await call("live events", "/v1/evaluations/{id}/events", "get", `/v1/evaluations/${sub.id}/events`, {}, 200);
    if (ev && ev.includes("event: end") && ev.includes('"status":"completed"')) pass("live events end after completed");
    else fail("live events end after completed", String(ev).slice(0, 300));
  }
  await call("live list", "/v1/evaluations", "get", "/v1/evaluations?limit=5", {}, 200);
  await call("live batch", "/v1/evaluations/batch", "post", "/v1/evaluations/batch",
    { headers: json, body: JSON.stringify({ evaluations: [{ code: "exit 0", language: "sh" }, { code: "x", language: "cobol" }] }) }, 202);
  await call("live 400", "/v1/evaluations", "post", "/v1/evaluations", { headers: json, body: "{" }, 400);
  await call("live 415", "/v1/evaluations", "post", "/v1/evaluations", { headers: { "Content-Type": "text/plain" }, body: "{}" }, 415);
  await call("live 422", "/v1/evaluations", "post", "/v1/evaluations",
    { headers: json, body: JSON.stringify({ code: "x", language: "python", memory_mb: 1e9 }) }, 422);
  await call("live 404", "/v1/evaluations/{id}", "get", "/v1/evaluations/01ARZ3NDEKTSV4RRFFQ69G5FAV", {}, 404);
  await call("live metrics", "/metrics", "get", "/metrics", {}, 200);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
