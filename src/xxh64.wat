;; XXH64 (seed 0) of a stream of bytes that arrive in pieces of any size, hashed where they
;; lie in the memory the module imports: the hasher's ring of reads, so no byte is copied
;; out of it. The source of xxh64-wasm.ts (scripts/build-wasm.mjs). The digest equals
;; xxhash-wasm's h64 of the same bytes, however they were split (test/xxh64.test.ts).
;;
;; The state is 80 bytes at $s (8-aligned): the four lanes at 0, 8, 16, 24; the bytes seen
;; (u64) at 32; how many bytes wait in the stripe buffer (u32) at 40; the stripe buffer (32
;; bytes, a stripe not yet complete) at 48.
(module
  (import "env" "memory" (memory 1 65536 shared))

  (func (export "init") (param $s i32)
    (i64.store (local.get $s) (i64.const 0x60ea27eeadc0b5d6)) ;; PRIME64_1 + PRIME64_2
    (i64.store offset=8 (local.get $s) (i64.const 0xc2b2ae3d27d4eb4f)) ;; PRIME64_2
    (i64.store offset=16 (local.get $s) (i64.const 0))
    (i64.store offset=24 (local.get $s) (i64.const 0x61c8864e7a143579)) ;; -PRIME64_1
    (i64.store offset=32 (local.get $s) (i64.const 0))
    (i32.store offset=40 (local.get $s) (i32.const 0)))

  ;; Adds the bytes at [$p, $p + $len) to the stream.
  (func (export "update") (param $s i32) (param $p i32) (param $len i32)
    (local $end i32) (local $limit i32) (local $held i32) (local $take i32)
    (local $v1 i64) (local $v2 i64) (local $v3 i64) (local $v4 i64)
    (i64.store offset=32 (local.get $s) (i64.add (i64.load offset=32 (local.get $s)) (i64.extend_i32_u (local.get $len))))
    (local.set $held (i32.load offset=40 (local.get $s)))
    ;; Too few for a stripe, even with the bytes held: hold them too.
    (if (i32.lt_u (i32.add (local.get $held) (local.get $len)) (i32.const 32))
      (then
        (memory.copy (i32.add (i32.add (local.get $s) (i32.const 48)) (local.get $held)) (local.get $p) (local.get $len))
        (i32.store offset=40 (local.get $s) (i32.add (local.get $held) (local.get $len)))
        (return)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $v1 (i64.load (local.get $s)))
    (local.set $v2 (i64.load offset=8 (local.get $s)))
    (local.set $v3 (i64.load offset=16 (local.get $s)))
    (local.set $v4 (i64.load offset=24 (local.get $s)))
    ;; Complete the held stripe first.
    (if (local.get $held)
      (then
        (local.set $take (i32.sub (i32.const 32) (local.get $held)))
        (memory.copy (i32.add (i32.add (local.get $s) (i32.const 48)) (local.get $held)) (local.get $p) (local.get $take))
        (local.set $p (i32.add (local.get $p) (local.get $take)))
        (local.set $v1 (call $round (local.get $v1) (i64.load offset=48 (local.get $s))))
        (local.set $v2 (call $round (local.get $v2) (i64.load offset=56 (local.get $s))))
        (local.set $v3 (call $round (local.get $v3) (i64.load offset=64 (local.get $s))))
        (local.set $v4 (call $round (local.get $v4) (i64.load offset=72 (local.get $s))))))
    ;; Whole stripes where they lie. The loop spells $round out: V8 does not inline calls
    ;; between wasm functions.
    (if (i32.le_u (i32.add (local.get $p) (i32.const 32)) (local.get $end))
      (then
        (local.set $limit (i32.sub (local.get $end) (i32.const 32)))
        (loop $stripes
          (local.set $v1 (i64.mul (i64.rotl (i64.add (local.get $v1) (i64.mul (i64.load (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v2 (i64.mul (i64.rotl (i64.add (local.get $v2) (i64.mul (i64.load offset=8 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v3 (i64.mul (i64.rotl (i64.add (local.get $v3) (i64.mul (i64.load offset=16 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $v4 (i64.mul (i64.rotl (i64.add (local.get $v4) (i64.mul (i64.load offset=24 (local.get $p)) (i64.const 0xc2b2ae3d27d4eb4f))) (i64.const 31)) (i64.const 0x9e3779b185ebca87)))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $stripes (i32.le_u (local.get $p) (local.get $limit))))))
    (i64.store (local.get $s) (local.get $v1))
    (i64.store offset=8 (local.get $s) (local.get $v2))
    (i64.store offset=16 (local.get $s) (local.get $v3))
    (i64.store offset=24 (local.get $s) (local.get $v4))
    ;; Hold what is left of an unfinished stripe.
    (memory.copy (i32.add (local.get $s) (i32.const 48)) (local.get $p) (i32.sub (local.get $end) (local.get $p)))
    (i32.store offset=40 (local.get $s) (i32.sub (local.get $end) (local.get $p))))

  ;; The digest of every byte added since `init`; the state is left as it was.
  (func (export "digest") (param $s i32) (result i64)
    (local $p i32) (local $end i32) (local $h i64) (local $total i64)
    (local.set $total (i64.load offset=32 (local.get $s)))
    (if (i64.ge_u (local.get $total) (i64.const 32))
      (then
        (local.set $h (i64.add (i64.add (i64.rotl (i64.load (local.get $s)) (i64.const 1)) (i64.rotl (i64.load offset=8 (local.get $s)) (i64.const 7)))
                               (i64.add (i64.rotl (i64.load offset=16 (local.get $s)) (i64.const 12)) (i64.rotl (i64.load offset=24 (local.get $s)) (i64.const 18)))))
        (local.set $h (call $merge (local.get $h) (i64.load (local.get $s))))
        (local.set $h (call $merge (local.get $h) (i64.load offset=8 (local.get $s))))
        (local.set $h (call $merge (local.get $h) (i64.load offset=16 (local.get $s))))
        (local.set $h (call $merge (local.get $h) (i64.load offset=24 (local.get $s)))))
      (else (local.set $h (i64.const 0x27d4eb2f165667c5)))) ;; PRIME64_5
    (local.set $h (i64.add (local.get $h) (local.get $total)))
    (local.set $p (i32.add (local.get $s) (i32.const 48)))
    (local.set $end (i32.add (local.get $p) (i32.load offset=40 (local.get $s))))
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
