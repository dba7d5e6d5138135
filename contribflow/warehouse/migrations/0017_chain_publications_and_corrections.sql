-- The audit trail's chain (0015) covers the publications (0014) and the four-eyes records (0016).
--
-- Both sets of tables are INSERT-only, so each row is sealed when it is inserted, in the inserting
-- transaction. A publication's inputs and outputs had a two-column key; the chain names a row by one
-- column, so they gain an identity column that does (existing rows are numbered in their order).
ALTER TABLE meta.publication_input ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
ALTER TABLE meta.publication_output ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;

SELECT meta.chain_relation('meta.publication', 'id');
SELECT meta.chain_relation('meta.publication_input', 'id');
SELECT meta.chain_relation('meta.publication_output', 'id');
SELECT meta.chain_relation('meta.correction_request', 'id');
SELECT meta.chain_relation('meta.correction_decision', 'id');
SELECT meta.chain_relation('meta.correction_application', 'id');
SELECT meta.chain_relation('meta.correction_link', 'id');
