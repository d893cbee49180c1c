-- A dbt-style model: one row per lead, its company's columns joined in, every column
-- named like the Outreach Magic API field it fills, so the connector needs no mapping.
-- Runs on DuckDB and PostgreSQL (tables `leads` and `companies`).
select
    l.email          as lead_email,
    l.linkedin_url   as lead_linkedin_url,
    l.first_name     as lead_first_name,
    l.last_name      as lead_last_name,
    l.title          as lead_job_title,
    l.country        as lead_country,
    l.status         as lead_status,
    c.domain         as company_domain,
    c.linkedin_url   as company_linkedin_url,
    c.name           as company_name,
    c.employees      as company_employee_count,
    c.industry       as company_industry,
    c.country        as company_country
from leads as l
left join companies as c on c.id = l.company_id
