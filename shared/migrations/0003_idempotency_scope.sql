-- Secret rotations are rate-limited per trigger: the times of its recent rotations.
ALTER TABLE routine_triggers ADD COLUMN secret_rotated_at timestamptz[] NOT NULL DEFAULT '{}';
