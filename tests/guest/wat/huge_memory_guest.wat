;; Test guest: ok_guest with a linear memory of 65,536 pages (4 GiB) from the start: its instances
;; need the host to allocate 4 GiB at once (tests of the failed-allocation guard).
(module
  (memory (export "memory") 65536)
  ;; Bump allocator over [65536, ...): the handler resets it, so each batch gets a fresh arena.
  (global $heap (mut i32) (i32.const 65536))
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
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
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  ;; 2048: the handler's result<_, error> return area; 2064: scratch return area.

  (global $handled (export "handled") (mut i32) (i32.const 0))
  (global $posts (export "posts") (mut i32) (i32.const 0))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    (global.set $handled (i32.add (global.get $handled) (local.get $len)))
    (global.set $heap (i32.const 65536))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
  (func (export "cabi_post_wasi:messaging/messaging-guest@0.2.0-draft#handler") (param i32)
    (global.set $posts (i32.add (global.get $posts) (i32.const 1))))
)
