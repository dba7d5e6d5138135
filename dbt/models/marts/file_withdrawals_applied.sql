{#- The withdrawals this build applies: every withdrawal not yet published (`contribflow
    withdraw-file` records them in meta.file_withdrawal; they wait for dbt-build and publish, so none
    appears while a build runs). Read once here, so that every model of the build applies the same
    ones; `contribflow publish` then records its build in their applied_build_id, and a withdrawal
    recorded after this build is left for the next one. -#}
select
    id,
    file_name,
    run_id,
    file_date,
    first_loaded_at,
    last_loaded_at
from {{ source('meta', 'file_withdrawal') }}
where applied_build_id is null
