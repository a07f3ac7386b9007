// Internal, not exported by the package: values built field by field before they are handed out.

/** Read-only fields made writable, to build a value field by field (no conditional spreads on hot paths). */
export type Mutable<T> = { -readonly [K in keyof T]: T[K] };
