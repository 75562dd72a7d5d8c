-- One counter change alone (see counter_core.lua, which this script is appended to).
--
-- KEYS[1..4] and ARGV[1..9]: counter_op's keys and argv.

return counter_op(KEYS, ARGV)
