// `pipeline provenance <image> [--json | --predicate]`: the in-toto statement of a local
// image (images/{name}/): the signed one kept beside it, else the one this host makes of
// it. `--json` prints the statement itself; `--predicate` only its SLSA predicate, for
// `actions/attest` (`predicate-type: https://slsa.dev/provenance/v1`, `predicate-path`).
import { type Command, Failure, nearest } from '../../src/index.ts';
import type { ImageCatalog } from '../store/catalog.ts';
import { describeSigner } from './bundle.ts';
import { localProvenance } from './local.ts';
import { statedInputs, type Statement } from './statement.ts';
import { loadTrust } from './trust.ts';
import { verifyProvenance } from './verify.ts';

export interface ProvenanceCommandDeps {
  readonly env?: NodeJS.ProcessEnv;
}

export function provenanceCommand(catalog: ImageCatalog, deps: ProvenanceCommandDeps = {}): Command {
  return {
    usage: 'provenance <image> [--json | --predicate]',
    description: "print an image's provenance: the in-toto statement (SLSA v1) of its bytes, inputs and build, and who signed it",
    options: { predicate: { type: 'boolean' } },
    async run(args, io) {
      const env = deps.env ?? process.env;
      const [name, ...extra] = args.positionals;
      if (!name || extra.length) throw new Failure('usage', 'usage: provenance <image> [--json | --predicate]');
      if (!catalog.names.includes(name)) {
        const guess = nearest(name, catalog.names);
        throw new Failure('usage', `unknown image "${name}"${guess ? ` (did you mean "${guess}"?)` : ''}; images: ${catalog.names.join(', ')}`);
      }
      const local = await localProvenance(catalog, name, env);
      if (args.values.predicate === true) {
        io.out(JSON.stringify(local.statement.predicate, null, 2));
        return 0;
      }
      if (io.json) {
        io.out(JSON.stringify(local.statement, null, 2));
        return 0;
      }
      let signature: string;
      if (!local.signed) {
        signature = local.bundleBytes
          ? 'unsigned (the bundle beside it is about other bytes or inputs)'
          : 'unsigned (an upload signs it, with PIPELINE_SIGNING_KEY or keyless in GitHub Actions)';
      } else if (catalog.release.trust) {
        const trust = await loadTrust(catalog.release.trust, { root: catalog.root, env });
        const verdict = await verifyProvenance(trust, name, local.record, local.signed.bytes);
        signature = verdict.trusted ? `${describeSigner(verdict.signer)}, verified (release.trust)` : `NOT TRUSTED: ${verdict.reason}`;
      } else {
        signature = `${describeSigner(local.signed.parsed.signer)}, not verified (no release.trust in the config)`;
      }
      for (const line of describeStatement(local.statement, signature)) io.out(line);
      return 0;
    },
  };
}

/** The statement in lines a person reads. */
export function describeStatement(statement: Statement, signature: string): string[] {
  const stated = statedInputs(statement);
  const definition = statement.predicate.buildDefinition;
  const dependencies = definition.resolvedDependencies ?? [];
  const internal = definition.internalParameters ?? {};
  const run = statement.predicate.runDetails;
  const row = (label: string, value: string) => `  ${label.padEnd(11)} ${value}`;
  const lines = [`${stated.subject.name}  sha256 ${stated.subject.sha256 ?? '?'}`, row('signature', signature), row('builder', run.builder.id)];
  if (run.metadata?.invocationId && run.metadata.invocationId !== run.builder.id) lines.push(row('run', run.metadata.invocationId));
  if (run.metadata?.finishedOn) lines.push(row('built', `${run.metadata.startedOn ?? '?'} to ${run.metadata.finishedOn}`));
  const base = dependencies.find((dependency) => dependency.annotations?.kind === 'base-image');
  if (base) {
    lines.push(row('base', `${stated.base?.path ?? '?'}${base.uri ? ` from ${base.uri}` : ''}`));
    for (const [algorithm, digest] of Object.entries(base.digest ?? {})) lines.push(row('', `${algorithm} ${digest}`));
  }
  Object.entries(stated.files).forEach(([path, sha256], index) => {
    lines.push(row(index === 0 ? 'inputs' : '', `${path}  sha256 ${sha256 ?? '?'}`));
  });
  for (const tool of dependencies.filter((dependency) => dependency.annotations?.kind === 'tool')) lines.push(row(tool.name ?? 'tool', tool.uri ?? '?'));
  const source = dependencies.find((dependency) => dependency.annotations?.kind === 'source');
  if (source) {
    const where = source.uri ? ` ${source.uri}` : '';
    lines.push(row('source', `${source.digest?.gitCommit ?? '?'}${where} (${source.annotations?.dirty === true ? 'dirty work tree' : 'clean'})`));
  }
  const parameters = ['accelerator', 'compression', 'cacheKey']
    .filter((key) => typeof internal[key] === 'string')
    .map((key) => `${key} ${String(internal[key])}`)
    .join(', ');
  if (parameters) lines.push(row('parameters', parameters));
  const versions = Object.entries(stated.versions ?? {})
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(' ');
  if (versions) lines.push(row('versions', versions));
  return lines;
}
