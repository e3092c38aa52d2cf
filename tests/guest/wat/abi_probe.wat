;; Canonical ABI probe: memory, a counting bump allocator, and a guest-configuration built in
;; static data, for the lifting/lowering unit tests (tests/guest/canonical_abi_test.cc).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  (global $reallocs (export "reallocs") (mut i32) (i32.const 0))

  ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: bump allocation, growing memory.
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (global.set $reallocs (i32.add (global.get $reallocs) (i32.const 1)))
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow
                      (i32.add (i32.shr_u (i32.sub (local.get $end)
                                                   (i32.mul (memory.size) (i32.const 65536)))
                                          (i32.const 16))
                               (i32.const 1)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  ;; The address of result<guest-configuration, error> = ok({
  ;;   channels: ["orders", "orders.audit"], extensions: some([("start", "earliest")]) }).
  (func (export "config_ok") (result i32) (i32.const 1024))
  ;; The same configuration with a channel string that is not UTF-8.
  (func (export "config_bad_utf8") (result i32) (i32.const 1280))
  ;; A configuration whose channel list points past the end of memory.
  (func (export "config_out_of_bounds") (result i32) (i32.const 1536))
  ;; A configuration whose extensions option has discriminant 7.
  (func (export "config_bad_discriminant") (result i32) (i32.const 1792))

  ;; ok: disc 0 @1024; channels (ptr 1100, len 2) @1028; extensions some @1036, (1120, 1) @1040
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\02\00\00\00" "\01\00\00\00"
                         "\60\04\00\00" "\01\00\00\00")
  ;; channel strings @1100: ("orders" @1200, 6), ("orders.audit" @1206, 12)
  (data (i32.const 1100) "\b0\04\00\00" "\06\00\00\00" "\b6\04\00\00" "\0c\00\00\00")
  ;; extension pair @1120: ("start" @1218, 5), ("earliest" @1223, 8)
  (data (i32.const 1120) "\c2\04\00\00" "\05\00\00\00" "\c7\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "ordersorders.auditstartearliest")

  ;; bad UTF-8: channels (ptr 1380, len 1) -> ("\ff\fe" @1400, 2); extensions none
  (data (i32.const 1280) "\00\00\00\00" "\64\05\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1380) "\78\05\00\00" "\02\00\00\00")
  (data (i32.const 1400) "\ff\fe")

  ;; out of bounds: channels (ptr 0xfffffff0, len 4)
  (data (i32.const 1536) "\00\00\00\00" "\f0\ff\ff\ff" "\04\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")

  ;; bad discriminant: channels (1100, 2), extensions disc 7
  (data (i32.const 1792) "\00\00\00\00" "\4c\04\00\00" "\02\00\00\00" "\07\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
)
