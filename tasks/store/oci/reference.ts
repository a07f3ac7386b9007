// Where an OCI store lives: `release.registry` (`ghcr.io/homestak-dev/images`) split into
// the registry host and the repository namespace under it, checked before any request, and
// the repositories and tags the store uses there:
//
//   {namespace}/{name}:{tag}              each image, one artifact
//   {namespace}/pipeline_index:{tag}      the index (images.json), rebuilt from the images
//   {namespace}/pipeline_index:_{name}_{tag}  one marker per image stored under {tag}
//
// Image names never hold '_' and store tags never start with one, so neither the index
// repository nor a marker tag can be taken for an image or a store tag.
import { Failure } from '../../../src/index.ts';
import { isValidImageName } from '../names.ts';

/** One path component of a repository name (the distribution spec's grammar). */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
/** A host, optionally with a port: a DNS name, an IPv4 address or a bracketed IPv6 one. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
/** The distribution spec's tag grammar. */
const OCI_TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export const INDEX_REPOSITORY = 'pipeline_index';

export interface RegistryLocation {
  /** As written in the config: `ghcr.io/homestak-dev/images`. */
  readonly reference: string;
  /** `ghcr.io`, `127.0.0.1:5000`: the key credentials are stored under. */
  readonly host: string;
  /** `https://ghcr.io`, or http:// with plainHttp. */
  readonly origin: string;
  /** `homestak-dev/images`; may be empty for a registry that allows top-level repositories. */
  readonly namespace: string;
}

/**
 * Parses `release.registry`. Docker Hub's short forms are spelled out (`docker.io/acme`
 * talks to registry-1.docker.io, as docker and skopeo do); `source` names where the value
 * came from for the one-line error.
 */
export function parseRegistry(reference: string, plainHttp: boolean, source = 'release.registry'): RegistryLocation {
  const trimmed = reference.trim().replace(/\/+$/, '');
  const bad = (why: string) =>
    new Failure('config', `${source}: ${JSON.stringify(reference)} is not a registry location (${why}); write it as host/namespace, e.g. ghcr.io/acme/images`);
  if (/^[a-z]+:\/\//i.test(trimmed)) throw bad('leave out the scheme; plainHttp: true is for a registry without TLS');
  const [host = '', ...path] = trimmed.split('/');
  if (!HOST.test(host) || !(host.includes('.') || host.includes(':') || host === 'localhost')) throw bad(`${JSON.stringify(host)} is not a registry host`);
  for (const component of path) if (!PATH_COMPONENT.test(component)) throw bad(`${JSON.stringify(component)} is not a valid repository path component`);
  const dockerHub = host === 'docker.io' || host === 'index.docker.io' || host === 'registry-1.docker.io';
  const apiHost = dockerHub ? 'registry-1.docker.io' : host;
  return { reference: trimmed, host: dockerHub ? 'docker.io' : host, origin: `${plainHttp ? 'http' : 'https'}://${apiHost}`, namespace: path.join('/') };
}

export function repositoryOf(location: RegistryLocation, name: string): string {
  return location.namespace ? `${location.namespace}/${name}` : name;
}

export function indexRepository(location: RegistryLocation): string {
  return repositoryOf(location, INDEX_REPOSITORY);
}

/** The marker tag of `name` under store tag `tag`; a Failure when the pair is too long for an OCI tag. */
export function markerTag(name: string, tag: string): string {
  const marker = `_${name}_${tag}`;
  if (!OCI_TAG.test(marker)) {
    throw new Failure(
      'usage',
      `image ${name} with tag ${tag} is too long for a registry tag (${marker.length} characters, 128 at most): use a shorter name or tag`,
    );
  }
  return marker;
}

/** The image name a marker tag of store tag `tag` stands for, or undefined for any other tag. */
export function markerName(marker: string, tag: string): string | undefined {
  const suffix = `_${tag}`;
  if (!marker.startsWith('_') || !marker.endsWith(suffix)) return undefined;
  const name = marker.slice(1, -suffix.length);
  return isValidImageName(name) ? name : undefined;
}

export function fullReference(location: RegistryLocation, repository: string, tag: string): string {
  return `${location.host}/${repository}:${tag}`;
}
