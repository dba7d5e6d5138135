-- A declaration is either restated by the build (the delta) or removed by it, never both: publish
-- deletes the removed ones and inserts the delta, in one transaction.
select removed.declaration_id
from {{ ref('fct_contributions_removed') }} as removed
inner join {{ ref('fct_contributions_delta') }} as delta on removed.declaration_id = delta.declaration_id
