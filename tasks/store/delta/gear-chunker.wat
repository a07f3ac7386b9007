;; Content-defined chunking with a gear hash, FastCDC style (normalized chunking: a
;; stricter mask before the average size, a looser one after it; cut-point search starts
;; at the minimum size). The source of gear-chunker-wasm.ts (scripts/build-wasm.mjs).
;;
;; Memory: imported, shared, so the scan can run over the hasher's ring of reads where the
;; bytes land (the chunker otherwise makes one of its own). The gear table (256 x i64) at
;; 0; the caller places the bytes and an output area for the chunks found (16 bytes each).
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; Finds chunks of the bytes at [$data, $data + $len), the first starting at $data.
  ;; Writes each complete chunk's length (u32) and XXH64 (u64, at +8) at $out, 16 bytes a
  ;; chunk, and returns how many. Without
  ;; $final, bytes after the last cut that could still grow into a longer chunk are left
  ;; for the next call (prepended to more bytes); with it, they are the last chunk.
  (func (export "cuts")
    (param $data i32) (param $len i32)
    (param $min i32) (param $avg i32) (param $max i32)
    (param $maskS i64) (param $maskL i64)
    (param $out i32) (param $final i32)
    (result i32)
    (local $start i32) (local $count i32) (local $remaining i32)
    (local $end i32) (local $norm i32) (local $i i32) (local $h i64) (local $cut i32) (local $entry i32)
    (local $a i64) (local $b i64) (local $h1 i64)
    (block $done
      (loop $chunk
        (local.set $remaining (i32.sub (local.get $len) (local.get $start)))
        (br_if $done (i32.eqz (local.get $remaining)))
        ;; $end: where this chunk must end at the latest, within the bytes at hand
        (local.set $end (select (local.get $max) (local.get $remaining) (i32.lt_u (local.get $max) (local.get $remaining))))
        (local.set $norm (select (local.get $avg) (local.get $end) (i32.lt_u (local.get $avg) (local.get $end))))
        (local.set $cut (i32.const 0))
        (if (i32.lt_u (local.get $min) (local.get $end))
          (then
            (local.set $i (i32.add (local.get $data) (i32.add (local.get $start) (local.get $min))))
            (local.set $norm (i32.add (local.get $data) (i32.add (local.get $start) (local.get $norm))))
            (local.set $end (i32.add (local.get $data) (i32.add (local.get $start) (local.get $end))))
            (local.set $h (i64.const 0))
            ;; Two bytes a step: h after both is (h << 2) + ((T[a] << 1) + T[b]), so the chain
            ;; from one step's h to the next is one shift and one add, as for one byte; the
            ;; hash after the first byte is checked beside it, off that chain.
            (block $found
              ;; strict: two bytes a step
              (block $strictPairs
                (loop $strict
                  (br_if $strictPairs (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $norm)))
                  (local.set $a (i64.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 3))))
                  (local.set $b (i64.load (i32.shl (i32.load8_u offset=1 (local.get $i)) (i32.const 3))))
                  (local.set $h1 (i64.add (i64.shl (local.get $h) (i64.const 1)) (local.get $a)))
                  (if (i64.eqz (i64.and (local.get $h1) (local.get $maskS)))
                    (then
                      (local.set $h (local.get $h1))
                      (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br $found)))
                  (local.set $h (i64.add (i64.shl (local.get $h) (i64.const 2))
                    (i64.add (i64.shl (local.get $a) (i64.const 1)) (local.get $b))))
                  (local.set $i (i32.add (local.get $i) (i32.const 2)))
                  (br_if $found (i64.eqz (i64.and (local.get $h) (local.get $maskS))))
                  (br $strict)))
              ;; strict: the odd byte left, if any
              (if (i32.lt_u (local.get $i) (local.get $norm))
                (then
                  (local.set $h (i64.add (i64.shl (local.get $h) (i64.const 1))
                    (i64.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 3)))))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $found (i64.eqz (i64.and (local.get $h) (local.get $maskS))))))
              ;; loose: two bytes a step
              (block $loosePairs
                (loop $loose
                  (br_if $loosePairs (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $end)))
                  (local.set $a (i64.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 3))))
                  (local.set $b (i64.load (i32.shl (i32.load8_u offset=1 (local.get $i)) (i32.const 3))))
                  (local.set $h1 (i64.add (i64.shl (local.get $h) (i64.const 1)) (local.get $a)))
                  (if (i64.eqz (i64.and (local.get $h1) (local.get $maskL)))
                    (then
                      (local.set $h (local.get $h1))
                      (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br $found)))
                  (local.set $h (i64.add (i64.shl (local.get $h) (i64.const 2))
                    (i64.add (i64.shl (local.get $a) (i64.const 1)) (local.get $b))))
                  (local.set $i (i32.add (local.get $i) (i32.const 2)))
                  (br_if $found (i64.eqz (i64.and (local.get $h) (local.get $maskL))))
                  (br $loose)))
              ;; loose: the odd byte left, if any
              (if (i32.lt_u (local.get $i) (local.get $end))
                (then
                  (local.set $h (i64.add (i64.shl (local.get $h) (i64.const 1))
                    (i64.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 3)))))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $found (i64.eqz (i64.and (local.get $h) (local.get $maskL))))))
              ;; no cut point: the chunk ends at $end, unless more bytes could still make it longer
              (local.set $i (local.get $end)))
            (local.set $cut (i32.sub (local.get $i) (i32.add (local.get $data) (local.get $start))))
            ;; a cut point found at $i is final; reaching $end is final only at the maximum size
            (if (i32.and
                  (i32.eq (local.get $cut) (local.get $remaining))
                  (i32.and (i32.lt_u (local.get $remaining) (local.get $max)) (i32.eqz (local.get $final))))
              (then
                ;; the scan ran out of bytes without a cut point: unless the last byte was one
                (if (i64.ne (i64.and (local.get $h) (select (local.get $maskS) (local.get $maskL)
                              (i32.le_u (local.get $remaining) (local.get $avg)))) (i64.const 0))
                  (then (br $done))))))
          (else
            ;; fewer bytes than the minimum: the last chunk, or wait for more
            (br_if $done (i32.eqz (local.get $final)))
            (local.set $cut (local.get $remaining))))
        (local.set $entry (i32.add (local.get $out) (i32.shl (local.get $count) (i32.const 4))))
        (i32.store (local.get $entry) (local.get $cut))
        (i64.store offset=8 (local.get $entry) (call $xxh64 (i32.add (local.get $data) (local.get $start)) (local.get $cut)))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (local.set $start (i32.add (local.get $start) (local.get $cut)))
        (br $chunk)))
    (local.get $count))

  ;; XXH64 of [$p, $p + $len), stored at $out: an i64 result would reach JavaScript as a
  ;; BigInt, one allocation per chunk checked (a million for a 3 GiB image).
  (func (export "xxh64_into") (param $p i32) (param $len i32) (param $out i32)
    (i64.store (local.get $out) (call $xxh64 (local.get $p) (local.get $len))))

  ;; XXH64 (seed 0) of [$p, $p + $len): each chunk's hash, checked against xxhash-wasm in the tests.
  ;; The stripe loop spells $round out: V8 does not inline calls between wasm functions.
  (func $xxh64 (param $p i32) (param $len i32) (result i64)
    (local $end i32) (local $limit i32) (local $h i64)
    (local $v1 i64) (local $v2 i64) (local $v3 i64) (local $v4 i64)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (if (i32.ge_u (local.get $len) (i32.const 32))
      (then
        (local.set $limit (i32.sub (local.get $end) (i32.const 32)))
        (local.set $v1 (i64.const 0x60ea27eeadc0b5d6)) ;; PRIME64_1 + PRIME64_2
        (local.set $v2 (i64.const 0xc2b2ae3d27d4eb4f)) ;; PRIME64_2
        (local.set $v3 (i64.const 0))
        (local.set $v4 (i64.const 0x61c8864e7a143579)) ;; -PRIME64_1
        (loop $stripes
          (local.set $v1 (i64.mul (i64.rotl (i64.add (local.get $v1) (i64.mul (i64.load (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v2 (i64.mul (i64.rotl (i64.add (local.get $v2) (i64.mul (i64.load offset=8 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v3 (i64.mul (i64.rotl (i64.add (local.get $v3) (i64.mul (i64.load offset=16 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v4 (i64.mul (i64.rotl (i64.add (local.get $v4) (i64.mul (i64.load offset=24 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $stripes (i32.le_u (local.get $p) (local.get $limit))))
        (local.set $h (i64.add (i64.add (i64.rotl (local.get $v1) (i64.const 1)) (i64.rotl (local.get $v2) (i64.const 7)))
                               (i64.add (i64.rotl (local.get $v3) (i64.const 12)) (i64.rotl (local.get $v4) (i64.const 18)))))
        (local.set $h (call $merge (local.get $h) (local.get $v1)))
        (local.set $h (call $merge (local.get $h) (local.get $v2)))
        (local.set $h (call $merge (local.get $h) (local.get $v3)))
        (local.set $h (call $merge (local.get $h) (local.get $v4))))
      (else (local.set $h (i64.const 0x27d4eb2f165667c5)))) ;; PRIME64_5
    (local.set $h (i64.add (local.get $h) (i64.extend_i32_u (local.get $len))))
    (block $no8
      (loop $words
        (br_if $no8 (i32.gt_u (i32.add (local.get $p) (i32.const 8)) (local.get $end)))
        (local.set $h (i64.xor (local.get $h) (call $round (i64.const 0) (i64.load (local.get $p)))))
        (local.set $h (i64.add (i64.mul (i64.rotl (local.get $h) (i64.const 27)) (i64.const 0x9e3779b185ebca87)) (i64.const 0x85ebca77c2b2ae63)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $words)))
    (if (i32.le_u (i32.add (local.get $p) (i32.const 4)) (local.get $end))
      (then
        (local.set $h (i64.xor (local.get $h) (i64.mul (i64.load32_u (local.get $p)) (i64.const 0x9e3779b185ebca87))))
        (local.set $h (i64.add (i64.mul (i64.rotl (local.get $h) (i64.const 23)) (i64.const 0xc2b2ae3d27d4eb4f)) (i64.const 0x165667b19e3779f9)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))))
    (block $none
      (loop $bytes
        (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h (i64.xor (local.get $h) (i64.mul (i64.load8_u (local.get $p)) (i64.const 0x27d4eb2f165667c5))))
        (local.set $h (i64.mul (i64.rotl (local.get $h) (i64.const 11)) (i64.const 0x9e3779b185ebca87)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $bytes)))
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 33))) (i64.const 0xc2b2ae3d27d4eb4f)))
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 29))) (i64.const 0x165667b19e3779f9)))
    (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 32))))

  (func $round (param $acc i64) (param $input i64) (result i64)
    (i64.mul (i64.rotl (i64.add (local.get $acc) (i64.mul (local.get $input) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31))
             (i64.const 0x9e3779b185ebca87)))

  (func $merge (param $acc i64) (param $value i64) (result i64)
    (i64.add (i64.mul (i64.xor (local.get $acc) (call $round (i64.const 0) (local.get $value))) (i64.const 0x9e3779b185ebca87))
             (i64.const 0x85ebca77c2b2ae63)))
)
