-- A dead letter keeps the exact bytes of a message that is not a JSON object (not UTF-8, a NUL,
-- trailing garbage, ...): payload shows it as text (UTF-8, each invalid byte as U+FFFD, NUL as
-- U+FFFD), payload_bytes is the message itself. For a JSON event that failed a check,
-- payload_bytes is NULL: payload holds the fields the job read, and the message stays at its
-- offset in Kafka.
ALTER TABLE ${dead_letters_table} ADD COLUMN IF NOT EXISTS payload_bytes bytea;
