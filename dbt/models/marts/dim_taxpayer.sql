{#- One row per pseudonymous taxpayer. The raw taxpayer_id never reaches marts.
    The sums are numeric(38,2): an amount has at most 12 whole digits, and a sum of n of them fewer
    than 12 + log10(n), so 36 whole digits hold any number of rows a table can have (numeric(16,2)
    overflowed at 101 amounts of 999999999999.99, a contract-valid file). -#}
select
    taxpayer_key,
    mode() within group (order by country) as main_country,
    min(event_date) as first_event_date,
    max(event_date) as last_event_date,
    count(*) as declarations,
    coalesce(
        sum(amount) filter (where status = 'PAID' and contribution_type <> 'REFUND'), 0
    )::numeric(38, 2) as amount_paid,
    coalesce(sum(amount) filter (where status = 'DUE'), 0)::numeric(38, 2) as amount_due
from {{ ref('fct_contributions') }}
group by taxpayer_key
