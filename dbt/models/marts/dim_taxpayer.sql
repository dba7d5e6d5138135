{#- One row per pseudonymous taxpayer. The raw taxpayer_id never reaches marts. -#}
select
    taxpayer_key,
    mode() within group (order by country) as main_country,
    min(event_date) as first_event_date,
    max(event_date) as last_event_date,
    count(*) as declarations,
    coalesce(sum(amount) filter (where status = 'PAID' and contribution_type <> 'REFUND'), 0)::numeric(16, 2) as amount_paid,
    coalesce(sum(amount) filter (where status = 'DUE'), 0)::numeric(16, 2) as amount_due
from {{ ref('fct_contributions') }}
group by taxpayer_key
