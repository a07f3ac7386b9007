// The memory the hasher reads large files into: a shared WebAssembly memory, so the
// SHA-256 thread hashes from it (its buffer is a SharedArrayBuffer) while xxh64, and any
// observer that asks to, run over the same bytes in WebAssembly where they lie, none of
// them copying a byte out of it. Laid out as:
//
//   [the observer's own bytes][the xxh64 state][gap][slot 0][gap][slot 1]...
//
// each gap being room the observer may write just before its slot.
import type { InPlaceObserver, WasmMemory } from './types.ts';
import { WASM_BASE64 } from './xxh64-wasm.ts';

/** The part of the WebAssembly API used here (the project's `lib` has no DOM, where its types live). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: unknown };
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory & { readonly buffer: SharedArrayBuffer };
};

interface Xxh64Exports {
  init(state: number): void;
  update(state: number, offset: number, length: number): void;
  digest(state: number): bigint;
}

const WASM_PAGE = 64 * 1024;
/** Slots start on page boundaries of the kernel's, which its copy into them likes. */
const SLOT_ALIGN = 4096;
const XXH64_STATE_BYTES = 80;

let compiled: object | undefined;

export class RingMemory {
  readonly memory: WasmMemory & { readonly buffer: SharedArrayBuffer };
  /** Where each slot starts in the memory. */
  readonly offsets: readonly number[];
  /** A view of each whole slot, to read into. */
  readonly slots: readonly Uint8Array[];
  private readonly xxh: Xxh64Exports;
  private readonly state: number;

  constructor(slots: number, slotBytes: number, observer?: InPlaceObserver) {
    const ownBytes = observer ? alignUp(observer.ownBytes, 8) : 0;
    const gap = observer ? alignUp(observer.gapBytes, SLOT_ALIGN) : 0;
    this.state = ownBytes;
    const stride = gap + alignUp(slotBytes, SLOT_ALIGN);
    const first = alignUp(this.state + XXH64_STATE_BYTES, SLOT_ALIGN) + gap;
    this.offsets = Array.from({ length: slots }, (_, slot) => first + slot * stride);
    const pages = Math.ceil((first + slots * stride) / WASM_PAGE);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    this.slots = this.offsets.map((offset) => new Uint8Array(this.memory.buffer, offset, slotBytes));
    compiled ??= new WebAssembly.Module(Buffer.from(WASM_BASE64, 'base64'));
    this.xxh = new WebAssembly.Instance(compiled, { env: { memory: this.memory } }).exports as Xxh64Exports;
    this.xxh.init(this.state);
  }

  /** Adds bytes [offset, offset + length) of the memory to the file's xxh64. */
  xxh64Update(offset: number, length: number): void {
    this.xxh.update(this.state, offset, length);
  }

  /** The xxh64 of every byte added. */
  xxh64(): bigint {
    // An i64 reaches JavaScript as a signed bigint.
    return BigInt.asUintN(64, this.xxh.digest(this.state));
  }
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
