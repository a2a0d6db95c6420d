//! The commands that talk to the conductor, one function each: ask, follow the work to
//! its end unless `--no-wait`, print the answer as a table or JSON.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use serde::de::DeserializeOwned;

use super::{
    output::{print, Format, Table},
    tables::{record_table, site_table, status_table, template_table, vm_table, SiteLine},
    wait::{self, Session},
    Ctx,
};
use crate::{
    conductor::api::{Request, StatusView, TemplateRecord, TemplateView, VmState, VmView},
    conf::Config,
    template::Template,
};

/// `template validate FILE`: checked here, without the conductor.
pub(super) fn validate(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let template = Template::load(file, ctx.config.conductor.max_vms_ceiling)?;
    print(ctx.format, &template, || template_table(&[&template]));
    Ok(())
}

/// `template instantiate FILE`, then its site followed until it answers.
pub(super) fn instantiate(ctx: &Ctx, file: PathBuf) -> anyhow::Result<()> {
    // Checked here first so a typo is reported without a round trip.
    Template::load(&file, ctx.config.conductor.max_vms_ceiling)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let source = std::fs::canonicalize(&file)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut session = Session::connect(&ctx.config, ctx.timeout)?;
    let record: TemplateRecord = session.call(&Request::TemplateInstantiate { source, text })?;
    let name = record.template.name().to_owned();
    if ctx.no_wait {
        print(ctx.format, &record, || {
            record_table(std::slice::from_ref(&record))
        });
        return Ok(());
    }
    if !ctx.quiet {
        println!("template {name}: instantiated; waiting for its site (--no-wait to skip)");
    }
    let view = wait::until_ready(&mut session, &name, ctx.wait_timeout, ctx.quiet)?;
    match ctx.format {
        Format::Json => print(ctx.format, &view, || unreachable!()),
        Format::Table => println!(
            "site ready: {}",
            view.status
                .as_ref()
                .and_then(|s| s.url.as_deref())
                .unwrap_or("(the splitter announced no URL)")
        ),
    }
    Ok(())
}

/// `template destroy NAME`, followed until every VM is gone.
pub(super) fn destroy(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let mut session = Session::connect(&ctx.config, ctx.timeout)?;
    let record: TemplateRecord = session.call(&Request::TemplateDestroy {
        name: name.to_owned(),
    })?;
    let name = record.template.name().to_owned();
    if ctx.no_wait {
        print(ctx.format, &record, || {
            record_table(std::slice::from_ref(&record))
        });
        return Ok(());
    }
    if !ctx.quiet {
        println!("template {name}: stopping the splitter, then deleting every VM");
    }
    wait::until_gone(&mut session, &name, ctx.wait_timeout, ctx.quiet)?;
    if ctx.format == Format::Json {
        print(ctx.format, &record, || unreachable!());
    }
    Ok(())
}

/// `template show [NAME]`.
pub(super) fn show(ctx: &Ctx, name: Option<String>) -> anyhow::Result<()> {
    let views: Vec<TemplateView> = call(&ctx.config, ctx.timeout, &Request::TemplateShow { name })?;
    print(ctx.format, &views, || {
        let records: Vec<TemplateRecord> = views.iter().map(|v| v.record.clone()).collect();
        let mut table = record_table(&records);
        table.header.push("phase");
        table.header.push("url");
        for (row, view) in table.rows.iter_mut().zip(&views) {
            let status = view.status.as_ref();
            row.push(status.map_or("-".into(), |s| format!("{:?}", s.phase).to_lowercase()));
            row.push(
                status
                    .and_then(|s| s.url.clone())
                    .unwrap_or_else(|| "-".into()),
            );
        }
        table
    });
    Ok(())
}

/// `template list`: a line per site.
pub(super) fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let views: Vec<TemplateView> = call(
        &ctx.config,
        ctx.timeout,
        &Request::TemplateShow { name: None },
    )?;
    let sites: Vec<SiteLine> = views.iter().map(SiteLine::of).collect();
    print(ctx.format, &sites, || site_table(&sites));
    Ok(())
}

/// `vm list [--template NAME]`.
pub(super) fn vm_list(ctx: &Ctx, template: Option<String>) -> anyhow::Result<()> {
    let vms: Vec<VmView> = call(&ctx.config, ctx.timeout, &Request::VmList { template })?;
    print(ctx.format, &vms, || vm_table(&vms));
    Ok(())
}

/// `vm delete NAME`: drained, then deleted, followed until it is gone.
pub(super) fn vm_delete(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let mut session = Session::connect(&ctx.config, ctx.timeout)?;
    let vm: VmState = session.call(&Request::VmDelete {
        name: name.to_owned(),
    })?;
    if !ctx.no_wait {
        if !ctx.quiet {
            println!("{name}: draining, then deleting (--no-wait to skip)");
        }
        wait::until_vm_gone(&mut session, name, ctx.wait_timeout, ctx.quiet)?;
    }
    let status = if ctx.no_wait { "draining" } else { "deleted" };
    print(ctx.format, &vm, || Table {
        header: vec!["vm", "status"],
        rows: vec![vec![vm.name.clone(), status.into()]],
    });
    Ok(())
}

/// `conductor status`.
pub(super) fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let status: StatusView = call(&ctx.config, ctx.timeout, &Request::Status)?;
    print(ctx.format, &status, || status_table(&status));
    Ok(())
}

/// One request/reply round trip with the conductor, on a connection of its own.
fn call<T: DeserializeOwned>(
    config: &Config,
    timeout: Duration,
    request: &Request,
) -> anyhow::Result<T> {
    Session::connect(config, timeout)?.call(request)
}
