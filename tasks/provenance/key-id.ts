// A public key's id: the SHA-256 of its DER SubjectPublicKeyInfo, in hex. A key-signed
// bundle names its key by this id (the verification material's hint); a host finds the
// trusted key with it, and messages show it.
import { createHash, type KeyObject } from 'node:crypto';

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');
}

/** The first 12 hex digits, for one-line messages. */
export function shortKeyId(keyId: string): string {
  return keyId.slice(0, 12);
}
