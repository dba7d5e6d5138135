-- One unique index on raw.contributions where two were: (declaration_id, record_hash) replaces the
-- unique record_hash index (0001: a row already there is a no-op) and the declaration_id index
-- (0008: contribflow trace).
--
-- It enforces the same rule. A record hash is the SHA-256 of a row's business values, its
-- declaration_id among them, so two rows with the same hash have the same declaration_id: the pair
-- is unique exactly when the hash is. Its leading column answers trace's lookup by declaration_id.
--
-- It costs a load far less. Each load paid for two btrees: sorted by hash, the declaration_id index
-- took its entries at random pages; in file order, the hash index did. The source numbers its
-- declarations in the order it sends them, and ingest sends each chunk in this index's order
-- (recordhash.load_order), so a day's new rows append at the right edge and the re-sent ones fall
-- among the last days' pages. The same clean 1M rows COPYed into an empty table: 6.5 s with both
-- indexes, 3.4 s with this one (docs/performance.md has the bench's figures).
--
-- On a warehouse that already holds rows, the new index is built before the old ones are dropped,
-- in this migration's one transaction: loads wait meanwhile (about 2 s per million rows here).
CREATE UNIQUE INDEX contributions_declaration_id_record_hash_key
    ON raw.contributions (declaration_id, record_hash);
DROP INDEX raw.contributions_record_hash_key;
DROP INDEX raw.contributions_declaration_id;
