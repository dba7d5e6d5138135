-- The incremental fct model reads only the rows that arrived after its watermark. A BRIN range is
-- excluded only once VACUUM has summarized it, and a day's new pages never were by the time dbt
-- ran, so the planner scanned all of raw: a daily cost that grew with history (at 1M rows, 138 ms
-- of the model's 350 ms query; the btree fetches the day's 2,835 pages in 31 ms). Loads append at
-- its right edge and its values repeat per COPY statement (deduplicated); it costs COPY ~0.4 s per
-- million rows.
DROP INDEX raw.contributions_ingestion_ts_brin;
CREATE INDEX contributions_ingestion_ts ON raw.contributions (ingestion_ts);
