-- Pseudonymisation guard: no column of any marts table may be called taxpayer_id.
select table_name, column_name
from information_schema.columns
where table_schema = 'marts' and column_name = 'taxpayer_id'
