// Validates prometheus-operator custom resources (monitoring.coreos.com/*).
//
// Input (stdin): a JSON array of Kubernetes objects.
// Output (stdout): a JSON array, one entry per input object, in order:
//   {"errors": [{"path": "spec.endpoints[0]", "message": "..."}]}   (empty = valid)
// Exit 0 when the check ran (whatever it found), 2 when the tool itself failed.
//
// Two checks per object, both from @kubernetes-models/prometheus-operator:
//   schema: the model class's validate() (JSON Schema via ajv: required fields,
//           types, enums, patterns). Its schemas allow unknown properties.
//   tsc:    the object is written as a literal assigned to a const of the
//           package's interface type (e.g. `const o0: IServiceMonitor = {...}`)
//           and type-checked with the TypeScript compiler API, options as
//           `tsc --noEmit --strict` (the file is in memory, not on disk).
//           Wrong types and missing fields come from tsc's diagnostics.
//           Unknown fields come from walking the literal with the type
//           checker: tsc's excess-property check does reach into nested
//           objects and arrays, but lists only some of the unknown fields
//           (see unknownFields()).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const ts = createRequire(import.meta.url)("typescript");
const PKG = "@kubernetes-models/prometheus-operator";

// Long generated interface names -> their last segment, e.g.
// IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1Endpoint -> Endpoint
const shortTypes = (s) => s.replace(/\bI(?:ComGithub|IoK8s)\w*?V\d+(?:(?:alpha|beta)\d+)?([A-Z]\w*)/g, "$1");

// "/spec/endpoints/0/port" -> "spec.endpoints[0].port"
function joinPath(parts) {
  return parts
    .map((p, i) => (/^\d+$/.test(String(p)) ? `[${p}]` : i === 0 ? p : `.${p}`))
    .join("");
}

// Returns the model class for apiVersion/kind, or null if the package has none.
async function modelClass(obj) {
  const { apiVersion, kind } = obj;
  if (!/^monitoring\.coreos\.com\/v\w+$/.test(apiVersion) || !/^[A-Za-z0-9]+$/.test(kind)) return null;
  try {
    const mod = await import(`${PKG}/${apiVersion}/${kind}`);
    const cls = mod[kind];
    return cls && cls.kind === kind && cls.apiVersion === apiVersion ? cls : null;
  } catch (e) {
    if (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return null;
    throw e;
  }
}

function schemaErrors(cls, obj) {
  try {
    new cls(obj).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    const seen = new Set();
    const out = [];
    for (const err of e.errors) {
      let message = err.message;
      if (err.keyword === "enum") message += `: ${err.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
      const path = joinPath(err.instancePath.split("/").slice(1)) || "(root)";
      const key = `${path}\0${message}`;
      if (!seen.has(key)) out.push({ path, message: `schema: ${message}` }), seen.add(key);
    }
    return out;
  }
}

// The field path of the innermost property or array element of `init`
// (an object/array literal) that contains source position `pos`.
function pathAt(init, pos) {
  const parts = [];
  let node = init;
  for (;;) {
    let next = null;
    if (ts.isObjectLiteralExpression(node)) {
      for (const prop of node.properties) {
        if (pos >= prop.getStart() && pos < prop.getEnd()) (parts.push(prop.name.text), (next = prop.initializer));
      }
    } else if (ts.isArrayLiteralExpression(node)) {
      node.elements.forEach((el, i) => {
        if (pos >= el.getStart() && pos < el.getEnd()) (parts.push(i), (next = el));
      });
    }
    if (!next) return joinPath(parts) || "(root)";
    node = next;
  }
}

// Every property of the literal `node`, at any depth, that the type expected
// there (TypeScript's contextual type) does not declare. tsc's own diagnostics
// list only some of them: it stops at the first excess property of a literal,
// and skips a literal's excess properties when it reports an error nested
// deeper inside the same literal.
function unknownFields(checker, node, parts = [], out = []) {
  if (ts.isArrayLiteralExpression(node)) {
    node.elements.forEach((el, i) => unknownFields(checker, el, [...parts, i], out));
  } else if (ts.isObjectLiteralExpression(node)) {
    const ct = checker.getContextualType(node);
    const candidates = (ct && ct.isUnion() ? ct.types : [ct]).filter(
      (t) => t && t.flags & (ts.TypeFlags.Object | ts.TypeFlags.Intersection),
    );
    for (const prop of node.properties) {
      const name = prop.name.text;
      const known = candidates.some(
        (t) =>
          checker.getPropertyOfType(t, name) ||
          t.getStringIndexType() ||
          checker.getPropertiesOfType(t).length === 0, // an empty type ({}, e.g. FieldsV1) takes any field
      );
      // No object type expected here at all: tsc reports the type mismatch.
      if (candidates.length && !known) {
        const types = candidates.map((t) => shortTypes(checker.typeToString(t))).join(" | ");
        out.push({ path: joinPath([...parts, name]), message: `unknown field '${name}' (not in ${types})` });
      } else {
        unknownFields(checker, prop.initializer, [...parts, name], out);
      }
    }
  }
  return out;
}

// A tsc message, shortened: its most specific line (chained messages end
// with it), short type names, no quotes around property names, and no long
// inferred literal types.
function tidy(text) {
  const lines = text.split("\n");
  return shortTypes(lines[lines.length - 1].trim())
    .replace(/'"(\w+)"'/g, "'$1'")
    .replace(/'\{[^']{40,}\}'/g, "'{...}'");
}

function typeErrors(entries) {
  const file = join(here, "__manifests__.ts"); // virtual: never written to disk
  const lines = [];
  entries.forEach(({ obj }, i) => {
    lines.push(`import type { I${obj.kind} as T${i} } from "${PKG}/${obj.apiVersion}/${obj.kind}";`);
  });
  entries.forEach(({ obj }, i) => lines.push(`export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};`));
  const source = lines.join("\n") + "\n";

  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) =>
    name === file ? ts.createSourceFile(name, source, lang, true) : getSourceFile.call(host, name, lang, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  const sf = program.getSourceFile(file);
  const consts = sf.statements.filter(ts.isVariableStatement);

  const checker = program.getTypeChecker();
  const results = consts.map((stmt) => unknownFields(checker, stmt.declarationList.declarations[0].initializer));
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    const i = d.file === sf ? consts.findIndex((s) => d.start >= s.getStart() && d.start < s.getEnd()) : -1;
    if (i < 0) throw new Error(`TypeScript: ${text}`); // not about an object: a tool problem
    const path = pathAt(consts[i].declarationList.declarations[0].initializer, d.start);
    // Excess-property errors (2353, 2561): unknownFields() already has them all.
    if ((d.code === 2353 || d.code === 2561) && results[i].some((e) => e.path === path)) continue;
    results[i].push({ path, message: tidy(text) });
  }
  for (const errs of results) errs.forEach((e) => (e.message = `tsc: ${e.message}`));
  return results;
}

async function main() {
  const objects = JSON.parse(readFileSync(0, "utf8"));
  const results = objects.map(() => ({ errors: [] }));
  const typed = [];
  for (const [i, obj] of objects.entries()) {
    const cls = await modelClass(obj);
    if (!cls) {
      results[i].errors.push({ path: "(root)", message: `no schema for kind ${obj.kind} in ${obj.apiVersion} (${PKG})` });
      continue;
    }
    results[i].errors.push(...schemaErrors(cls, obj));
    typed.push({ i, obj });
  }
  if (typed.length) typeErrors(typed).forEach((errs, j) => results[typed[j].i].errors.push(...errs));
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().catch((e) => {
  console.error(`validate-crs.mjs: ${e.stack || e}`);
  process.exit(2);
});
