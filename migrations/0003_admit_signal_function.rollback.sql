DROP FUNCTION IF EXISTS admit_signal(text, text, text, text, timestamptz, jsonb, timestamptz,
                                     integer, text, text);
