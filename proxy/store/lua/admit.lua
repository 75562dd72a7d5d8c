-- One call's admission (admit_core.lua is prepended: see admit(), whose reply this is).
-- KEYS: three per bucket, as admit_core.lua says.
-- ARGV: max_ms, token, then four per bucket (kind, limit, window_ms, reset_ms).
return admit(tonumber(ARGV[1]), ARGV[2], 2)
