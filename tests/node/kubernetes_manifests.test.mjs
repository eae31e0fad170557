// Validates every Kubernetes object under deploy/kubernetes against the Kubernetes API schemas of the
// kubernetes-models package (types, required fields, enums, formats), offline. Run by
// tests/deploy/test_kubernetes.py, which also passes the output of `kubectl kustomize` for each
// kustomization (BRT_K8S_RENDERED: files separated by the path delimiter), so the generated ConfigMap
// and the GPU overlay's patched StatefulSet are checked as applied.
// kustomization.yaml files and overlay patches (partial objects) are not objects: they are skipped here
// and checked through the rendered output. What the schemas do not catch: unknown (misspelt) fields.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { delimiter, join, relative, resolve } from "node:path";
import { parseAllDocuments } from "yaml";

const ROOT = resolve(import.meta.dirname, "..", "..");
const K8S_DIR = join(ROOT, "deploy", "kubernetes");

function yamlFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "patches" ? [] : yamlFiles(path);
    return /\.ya?ml$/.test(name) && name !== "kustomization.yaml" ? [path] : [];
  });
}

// "apps/v1" -> kubernetes-models/apps/v1, "v1" -> kubernetes-models/v1.
async function modelClass(apiVersion, kind) {
  let module;
  try {
    module = await import(`kubernetes-models/${apiVersion}`);
  } catch {
    return null;
  }
  return module[kind] ?? null;
}

async function validateFile(path) {
  const errors = [];
  const kinds = [];
  const docs = parseAllDocuments(readFileSync(path, "utf8"));
  for (const [i, doc] of docs.entries()) {
    const where = `${relative(ROOT, path)} document ${i + 1}`;
    if (doc.errors.length) {
      errors.push(`${where}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const Model = await modelClass(obj.apiVersion, obj.kind);
    if (!Model) {
      errors.push(`${where}: no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`);
      continue;
    }
    if (!obj.metadata?.name) errors.push(`${where}: ${obj.kind} without metadata.name`);
    try {
      new Model(obj).validate();
      kinds.push(`${obj.apiVersion}/${obj.kind}`);
    } catch (e) {
      errors.push(`${where}: ${obj.kind} ${obj.metadata?.name}: ${e.message}`);
    }
  }
  return { errors, kinds };
}

const rendered = (process.env.BRT_K8S_RENDERED ?? "").split(delimiter).filter(Boolean);
const files = [...yamlFiles(K8S_DIR), ...rendered];
const seen = new Set();

for (const path of files) {
  test(`valid Kubernetes objects: ${relative(ROOT, path)}`, async () => {
    const { errors, kinds } = await validateFile(path);
    assert.deepEqual(errors, []);
    assert.ok(kinds.length > 0, "no objects in the file");
    kinds.forEach((k) => seen.add(k));
  });
}

test("the manifests hold every kind the deployment needs", () => {
  const expected = ["v1/Namespace", "v1/Service", "v1/ConfigMap", "v1/Secret", "apps/v1/StatefulSet",
    "apps/v1/Deployment", "autoscaling/v2/HorizontalPodAutoscaler", "policy/v1/PodDisruptionBudget",
    "networking.k8s.io/v1/NetworkPolicy"];
  assert.deepEqual(expected.filter((k) => !seen.has(k)), []);
});
