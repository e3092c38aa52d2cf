;; Test guest: the handler loads from far past the end of its memory (an out-of-bounds access,
;; which must trap in both tiers, never read the host's memory).
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $size) (i32.const 7))
                                                           (i32.const -8))))
    (local.get $ptr))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (drop (i32.load (i32.const 0x7ffffff0)))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
)
