// Telling "the host is not there" from "the connection broke": the first fails at once
// (nothing a retry would change within seconds), the second is worth another attempt.
import type { ClientRequest } from 'node:http';

/** A connection not made within this long (DNS included) counts as unreachable. */
export const CONNECT_TIMEOUT_MS = 4000;

/** Errors that mean nothing answered at that address: no route, refused, or no such name. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ECONNECT_TIMEOUT']);

/** The connection could not be made (see UNREACHABLE_CODES); its `code` says how. */
export class UnreachableError extends Error {
  override readonly name = 'UnreachableError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export function isUnreachable(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current instanceof UnreachableError) return true;
    if (UNREACHABLE_CODES.has(String((current as NodeJS.ErrnoException).code))) return true;
  }
  return false;
}

/**
 * Destroys `request` with an UnreachableError when its socket has not connected within
 * CONNECT_TIMEOUT_MS. Returns the function that stops the clock (call it once an answer,
 * or an error, arrives).
 */
export function connectDeadline(request: ClientRequest, url: URL, timeoutMs = CONNECT_TIMEOUT_MS): () => void {
  const timer = setTimeout(() => {
    request.destroy(new UnreachableError(`no connection to ${url.host} within ${timeoutMs / 1000} s`, 'ECONNECT_TIMEOUT'));
  }, timeoutMs);
  const stop = () => clearTimeout(timer);
  request.once('socket', (socket) => {
    // A kept-alive socket is connected already.
    if (!socket.connecting) stop();
    else socket.once('connect', stop);
  });
  request.once('close', stop);
  return stop;
}
