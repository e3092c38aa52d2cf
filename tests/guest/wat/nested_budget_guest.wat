;; Test guest (issue 18 item 6): once armed, its cabi_realloc spins 50,000 times (about 300,000
;; interpreter steps) before allocating. The handler arms it and calls error.trace once per message
;; of its batch, so most of the handler's work runs nested in host calls.
(module
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[static]error.trace" (func $trace (param i32)))
  (memory (export "memory") 2)
  (global $armed (mut i32) (i32.const 0))
  ;; Bump allocator over [65536, ...): the handler resets it, so each batch gets a fresh arena.
  (global $heap (mut i32) (i32.const 65536))
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $spin i32)
    (if (global.get $armed)
      (then
        (local.set $spin (i32.const 50000))
        (block $done
          (loop $burn
            (br_if $done (i32.eqz (local.get $spin)))
            (local.set $spin (i32.sub (local.get $spin) (i32.const 1)))
            (br $burn)))))
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (drop (memory.grow
                (i32.add (i32.shr_u (i32.sub (local.get $end)
                                             (i32.mul (memory.size) (i32.const 65536)))
                                    (i32.const 16))
                         (i32.const 1))))))
    (global.set $heap (local.get $end))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))
  ;; configure() -> ok({ channels: ["guest.in"], extensions: none }), built in static data.
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    (local $i i32)
    (global.set $armed (i32.const 1))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $trace (i32.const 2096))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (global.set $armed (i32.const 0))
    (global.set $heap (i32.const 65536))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
)
