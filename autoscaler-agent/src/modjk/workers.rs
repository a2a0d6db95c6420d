//! The splitter's workers.properties as a value: [`WorkersFile::parse`] reads the image's
//! file (or the agent's own, after a restart), [`WorkersFile::render`] writes it with the
//! pool's members, and [`validate`] checks a text the way mod_jk needs it, since
//! `apache2 -t` does not read it. Pure: text in, text or errors out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use autoscaler_messaging::{MemberState, PoolMember};

use super::ModJkError;

/// The line after which the agent writes the pool's members; everything below it is
/// rewritten at each update.
pub(crate) const MEMBERS_MARKER: &str =
    "# --- pool members, written by autoscaler-agent: everything below this line is rewritten ---";

/// Spare workers rendered at each reload: a member that joins later takes one through
/// jkstatus (host, port, route, activation), with no reload. A graceful reload stops
/// Apache from accepting for about a second (the event MPM starts the new children at
/// its next maintenance run), which stalled the site at each scale-out (doc/policy.md,
/// "Reaction and settle"); more members joining at once than spares left cost a reload.
pub(crate) const SPARES: usize = 8;

/// The names of the spare workers: `_spare_1` ... A member's name is its VM's, which starts
/// with the template's name, a letter or a digit: it never takes one (nor may it).
const SPARE_PREFIX: &str = "_spare_";

/// The splitter's workers.properties: the image's lines and the pool's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkersFile {
    /// The lines before [`MEMBERS_MARKER`] (all of them in the image's file), kept as
    /// they are except `balance_line`.
    base: Vec<String>,
    /// Index in `base` of the balancer's `balance_workers` line.
    balance_line: usize,
    /// The key of that line, e.g. `worker.loadbalancer.balance_workers`.
    balance_key: String,
    /// The `type=lb` worker's name (jkstatus's `w=`).
    balancer: String,
    /// Members of `balance_workers` defined above the marker (the placeholder): always
    /// listed first, never touched.
    image_members: Vec<String>,
    /// The worker the members inherit from (`worker.<template>`).
    template: String,
    /// Every worker defined above the marker (balancer, template, placeholder, status):
    /// names a pool member must not take.
    reserved: BTreeSet<String>,
    /// The pool's members below the marker, in file order.
    members: Vec<PoolMember>,
    /// Members that live in a spare worker (member name -> worker name); the worker's
    /// `route` is the member's name, so the request log names the member.
    spare_of: BTreeMap<String, String>,
    /// Spare workers no member holds (port 0: stopped, never routed to).
    free: Vec<String>,
}

/// A worker defined below the marker: a member, or a free spare.
#[derive(Debug, Default)]
struct Section {
    host: String,
    port: u16,
    state: Option<MemberState>,
    route: Option<String>,
}

/// `key=value` of a properties line, or `None` for blank lines and comments.
fn property(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

/// `(worker, property)` of a `worker.<worker>.<property>` key.
fn worker_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("worker.")?;
    let (worker, property) = rest.rsplit_once('.')?;
    (!worker.is_empty() && !property.is_empty()).then_some((worker, property))
}

/// mod_jk worker names the agent writes or sends to jkstatus: letters, digits and `_`.
pub(super) fn is_worker_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl WorkersFile {
    /// Reads the file's text; `path` only names it in errors.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<WorkersFile, ModJkError> {
        let error = |problem: String| ModJkError::File {
            path: path.display().to_string(),
            problem,
        };
        let lines: Vec<&str> = text.lines().collect();
        let (base, block) = split_at_marker(&lines);
        let (balancer, reserved) = find_balancer(base).map_err(error)?;
        let balance_key = format!("worker.{balancer}.balance_workers");
        let (balance_line, listed) = balance_workers(base, &balance_key).map_err(error)?;
        let sections = parse_sections(block).map_err(error)?;
        let below: Vec<&str> = sections.iter().map(|(w, _)| w.as_str()).collect();
        let image_members = image_members(&listed, &below, &balance_key).map_err(error)?;
        let (members, spare_of, free) = members_and_spares(sections).map_err(error)?;
        let template = find_template(base, &image_members, &balance_key).map_err(error)?;
        Ok(WorkersFile {
            base: base.iter().map(|l| (*l).to_owned()).collect(),
            balance_line,
            balance_key,
            balancer,
            image_members,
            template,
            reserved,
            members,
            spare_of,
            free,
        })
    }

    /// Whether `name` is a worker of the image or a spare's name, which no pool member
    /// may be called.
    pub(crate) fn is_reserved(&self, name: &str) -> bool {
        self.reserved.contains(name) || name.starts_with(SPARE_PREFIX)
    }

    /// The mod_jk worker that holds `member` (its own name, or a spare's).
    pub(crate) fn worker_of<'a>(&'a self, member: &'a str) -> &'a str {
        self.spare_of.get(member).map_or(member, String::as_str)
    }

    /// How many spare workers no member holds.
    pub(crate) fn free_spares(&self) -> usize {
        self.free.len()
    }

    /// The `type=lb` worker's name.
    pub(crate) fn balancer(&self) -> &str {
        &self.balancer
    }

    /// The image's own members of the balancer (never routed to, never reported).
    pub(crate) fn image_members(&self) -> &[String] {
        &self.image_members
    }

    /// The pool's members as the file holds them.
    pub(crate) fn members(&self) -> &[PoolMember] {
        &self.members
    }

    /// This file with `members` as the pool, each in a worker of its own name, and
    /// [`SPARES`] free spares: what a reload makes mod_jk run.
    pub(crate) fn with_members(&self, members: &[PoolMember]) -> WorkersFile {
        WorkersFile {
            members: members.to_vec(),
            spare_of: BTreeMap::new(),
            free: (1..=SPARES).map(|i| format!("{SPARE_PREFIX}{i}")).collect(),
            ..self.clone()
        }
    }

    /// This file with `members` as the pool, where the members this file lacks take
    /// free spares (in order) and the others stay where they are: what mod_jk runs once
    /// jkstatus has pointed each returned spare at its member. `None` when fewer spares
    /// are free than members join.
    pub(crate) fn with_joined(
        &self,
        members: &[PoolMember],
    ) -> Option<(WorkersFile, Vec<(String, PoolMember)>)> {
        let joining: Vec<&PoolMember> = members
            .iter()
            .filter(|m| !self.members.iter().any(|old| old.name == m.name))
            .collect();
        if joining.len() > self.free.len() {
            return None;
        }
        let mut file = WorkersFile {
            members: members.to_vec(),
            ..self.clone()
        };
        file.spare_of
            .retain(|name, _| members.iter().any(|m| &m.name == name));
        let taken: Vec<String> = file.free.drain(..joining.len()).collect();
        let mut assigned = Vec::new();
        for (spare, member) in taken.into_iter().zip(joining) {
            file.spare_of.insert(member.name.clone(), spare.clone());
            assigned.push((spare, member.clone()));
        }
        Some((file, assigned))
    }

    /// The file's text; `generation` goes into a comment for the operator.
    pub(crate) fn render(&self, generation: Option<u64>) -> String {
        let mut out = String::new();
        for (i, line) in self.base.iter().enumerate() {
            if i == self.balance_line {
                let names: Vec<&str> = self
                    .image_members
                    .iter()
                    .map(String::as_str)
                    .chain(self.members.iter().map(|m| self.worker_of(&m.name)))
                    .chain(self.free.iter().map(String::as_str))
                    .collect();
                out.push_str(&format!("{}={}\n", self.balance_key, names.join(",")));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if self.base.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push('\n');
        }
        out.push_str(MEMBERS_MARKER);
        out.push('\n');
        if let Some(generation) = generation {
            out.push_str(&format!("# pool generation {generation}\n"));
        }
        for m in &self.members {
            let n = self.worker_of(&m.name);
            out.push_str(&format!(
                "\nworker.{n}.reference=worker.{}\nworker.{n}.host={}\nworker.{n}.port={}\n",
                self.template, m.host, m.port
            ));
            if n != m.name {
                out.push_str(&format!("worker.{n}.route={}\n", m.name));
            }
            if m.state == MemberState::Draining {
                out.push_str(&format!("worker.{n}.activation=D\n"));
            }
        }
        for n in &self.free {
            out.push_str(&format!(
                "\nworker.{n}.reference=worker.{}\nworker.{n}.host=localhost\nworker.{n}.port=0\n",
                self.template
            ));
        }
        out
    }
}

/// The lines before [`MEMBERS_MARKER`] without their trailing blank lines (render writes
/// one before the marker), and the lines after it.
fn split_at_marker<'a, 'b>(lines: &'b [&'a str]) -> (&'b [&'a str], &'b [&'a str]) {
    let marker = lines.iter().position(|l| l.trim() == MEMBERS_MARKER);
    let (mut base, block) = match marker {
        Some(i) => (&lines[..i], &lines[i + 1..]),
        None => (lines, &[][..]),
    };
    while let [rest @ .., last] = base {
        if !last.trim().is_empty() {
            break;
        }
        base = rest;
    }
    (base, block)
}

/// The one `type=lb` worker of the image's lines, and every worker they define.
fn find_balancer(base: &[&str]) -> Result<(String, BTreeSet<String>), String> {
    let mut balancers = Vec::new();
    let mut reserved = BTreeSet::new();
    for line in base {
        if let Some((key, value)) = property(line) {
            if let Some((worker, prop)) = worker_key(key) {
                reserved.insert(worker.to_owned());
                if prop == "type" && value == "lb" {
                    balancers.push(worker.to_owned());
                }
            }
        }
    }
    let balancer = match balancers.as_slice() {
        [one] => one.clone(),
        _ => {
            return Err(format!(
                "expected exactly one worker with type=lb, found {}",
                balancers.len()
            ))
        }
    };
    if !balancer
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!(
            "the balancer's name {balancer:?} has characters jkstatus URLs cannot carry"
        ));
    }
    Ok((balancer, reserved))
}

/// The index of the one `balance_key` line among the image's lines, and the names it lists.
fn balance_workers<'a>(
    base: &[&'a str],
    balance_key: &str,
) -> Result<(usize, Vec<&'a str>), String> {
    let balance_lines: Vec<usize> = base
        .iter()
        .enumerate()
        .filter(|(_, l)| property(l).is_some_and(|(k, _)| k == balance_key))
        .map(|(i, _)| i)
        .collect();
    let balance_line = match balance_lines.as_slice() {
        [one] => *one,
        _ => {
            return Err(format!(
                "expected one {balance_key} line, found {}",
                balance_lines.len()
            ))
        }
    };
    let listed = property(base[balance_line])
        .map(|(_, v)| v)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    Ok((balance_line, listed))
}

/// The listed names not defined below the marker (the image's own); every member below
/// the marker must be listed.
fn image_members(
    listed: &[&str],
    below: &[&str],
    balance_key: &str,
) -> Result<Vec<String>, String> {
    let in_block: BTreeSet<&str> = below.iter().copied().collect();
    if let Some(w) = below.iter().find(|w| !listed.contains(w)) {
        return Err(format!(
            "member {w:?} is defined below the marker but not in {balance_key}"
        ));
    }
    Ok(listed
        .iter()
        .filter(|n| !in_block.contains(*n))
        .map(|n| (*n).to_owned())
        .collect())
}

/// The template: what the image's own members inherit from (`reference=worker.<name>`).
fn find_template(
    base: &[&str],
    image_members: &[String],
    balance_key: &str,
) -> Result<String, String> {
    image_members
        .iter()
        .find_map(|member| {
            let key = format!("worker.{member}.reference");
            base.iter()
                .filter_map(|l| property(l))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.strip_prefix("worker."))
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            format!(
                "cannot tell which worker members inherit from: no member of {balance_key} \
                 above the marker has reference=worker.<name>"
            )
        })
}

/// The workers the agent wrote below the marker, in file order.
fn parse_sections(block: &[&str]) -> Result<Vec<(String, Section)>, String> {
    let mut sections: Vec<(String, Section)> = Vec::new();
    for line in block {
        let Some((key, value)) = property(line) else {
            if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                return Err(format!("below the marker: {line:?} is not key=value"));
            }
            continue;
        };
        let Some((worker, prop)) = worker_key(key) else {
            return Err(format!("below the marker: unexpected key {key:?}"));
        };
        if !is_worker_name(worker) {
            return Err(format!("below the marker: bad worker name {worker:?}"));
        }
        let index = match sections.iter().position(|(w, _)| w == worker) {
            Some(i) => i,
            None => {
                sections.push((worker.to_owned(), Section::default()));
                sections.len() - 1
            }
        };
        let section = &mut sections[index].1;
        match prop {
            "reference" => {}
            "host" => section.host = value.to_owned(),
            "port" => {
                section.port = value
                    .parse()
                    .map_err(|_| format!("{key}={value}: not a port"))?
            }
            "route" if is_worker_name(value) => section.route = Some(value.to_owned()),
            "activation" => {
                section.state = match value.chars().next().map(|c| c.to_ascii_lowercase()) {
                    Some('a') => Some(MemberState::Active),
                    Some('d') => Some(MemberState::Draining),
                    _ => return Err(format!("{key}={value}: expected A or D")),
                }
            }
            _ => return Err(format!("below the marker: unexpected key {key:?}")),
        }
    }
    Ok(sections)
}

/// What [`WorkersFile::parse`] keeps of the sections below the marker: the members (a
/// spare's under its `route`), which spare holds which member, and the free spares
/// (port 0, no route).
type MembersAndSpares = (Vec<PoolMember>, BTreeMap<String, String>, Vec<String>);

/// Splits the sections below the marker into members and free spares.
fn members_and_spares(sections: Vec<(String, Section)>) -> Result<MembersAndSpares, String> {
    let (mut members, mut spare_of, mut free) = (Vec::new(), BTreeMap::new(), Vec::new());
    for (worker, section) in sections {
        let spare = worker.starts_with(SPARE_PREFIX);
        if spare && section.port == 0 && section.route.is_none() {
            free.push(worker);
            continue;
        }
        if section.host.is_empty() || section.port == 0 {
            return Err(format!("member {worker:?} has no host or port"));
        }
        let name = match section.route {
            Some(route) if route != worker => {
                if !spare {
                    return Err(format!("member {worker:?}: a route other than its name"));
                }
                spare_of.insert(route.clone(), worker);
                route
            }
            _ => worker,
        };
        if members.iter().any(|m: &PoolMember| m.name == name) {
            return Err(format!("member {name:?} is defined twice"));
        }
        members.push(PoolMember {
            name,
            host: section.host,
            port: section.port,
            state: section.state.unwrap_or(MemberState::Active),
        });
    }
    Ok((members, spare_of, free))
}

/// Checks a workers.properties text the way mod_jk would need it, since `apache2 -t`
/// does not read it: every line a property, worker names mod_jk accepts, and every
/// member of every balancer defined with a host and a non-empty port (directly or through
/// `reference`). An undefined member would otherwise get mod_jk's `localhost:8009`.
pub(crate) fn validate(text: &str) -> Result<(), ModJkError> {
    let invalid = |problem: String| Err(ModJkError::Invalid(problem));
    // worker -> property -> value; balance_workers values concatenate as in mod_jk.
    let mut workers: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let Some((key, value)) = property(line) else {
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                return invalid(format!("line {}: {t:?} is not key=value", index + 1));
            }
            continue;
        };
        let Some((worker, prop)) = worker_key(key) else {
            if key.starts_with("worker.") && !key[7..].contains('.') {
                continue; // worker.list, worker.maintain
            }
            return invalid(format!("line {}: unexpected key {key:?}", index + 1));
        };
        if !is_worker_name(worker) {
            return invalid(format!(
                "line {}: worker name {worker:?} is not letters, digits and _",
                index + 1
            ));
        }
        let props = workers.entry(worker).or_default();
        match props.get_mut(prop) {
            Some(old) if prop == "balance_workers" => {
                old.push(',');
                old.push_str(value);
            }
            _ => {
                props.insert(prop, value.to_owned());
            }
        }
    }
    // A property of `worker`, following `reference=worker.<other>` up to a few levels.
    let lookup = |worker: &str, prop: &str| -> Option<String> {
        let mut current = worker.to_owned();
        for _ in 0..8 {
            let props = workers.get(current.as_str())?;
            if let Some(v) = props.get(prop) {
                return Some(v.clone());
            }
            current = props.get("reference")?.strip_prefix("worker.")?.to_owned();
        }
        None
    };
    let mut balancers = 0;
    for (name, props) in &workers {
        if lookup(name, "type").as_deref() != Some("lb") {
            continue;
        }
        balancers += 1;
        let members: Vec<&str> = props
            .get("balance_workers")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if members.is_empty() {
            return invalid(format!("balancer {name:?} has no balance_workers"));
        }
        let mut unique = BTreeSet::new();
        for member in members {
            if !is_worker_name(member) {
                return invalid(format!(
                    "balancer {name:?}: member name {member:?} is not letters, digits and _"
                ));
            }
            if !unique.insert(member) {
                return invalid(format!("balancer {name:?} lists {member:?} twice"));
            }
            if !workers.contains_key(member) {
                return invalid(format!("balance worker {member:?} is not defined"));
            }
            if lookup(member, "host").is_none_or(|host| host.is_empty()) {
                return invalid(format!("balance worker {member:?} has no host"));
            }
            // Port 0 is valid: mod_jk starts such a member stopped (the placeholder).
            if lookup(member, "port").is_none_or(|port| port.parse::<u16>().is_err()) {
                return invalid(format!("balance worker {member:?} has no valid port"));
            }
        }
    }
    if balancers == 0 {
        return invalid("no worker of type lb".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image's file as its boot script renders it (values from image.conf).
    pub(crate) const IMAGE_FILE: &str = "\
# workers.properties of one modjk-splitter VM
worker.list=loadbalancer,jkstatus

worker.maintain=5

# A member is three lines:
#   worker.tomcat-web-1.reference=worker.member
worker.member.type=ajp13
worker.member.ping_mode=A
worker.member.ping_timeout=1000
worker.member.reply_timeout=2000

worker.loadbalancer.type=lb
worker.loadbalancer.method=B
worker.loadbalancer.sticky_session=false
worker.loadbalancer.balance_workers=placeholder

worker.placeholder.reference=worker.member
worker.placeholder.host=localhost
worker.placeholder.port=0

worker.jkstatus.type=status
";

    fn member(name: &str, host: &str, state: MemberState) -> PoolMember {
        PoolMember {
            name: name.into(),
            host: host.into(),
            port: 8009,
            state,
        }
    }

    fn image() -> WorkersFile {
        WorkersFile::parse(Path::new("workers.properties"), IMAGE_FILE).unwrap()
    }

    #[test]
    fn the_image_file_is_understood() {
        let file = image();
        assert_eq!(file.balancer(), "loadbalancer");
        assert_eq!(file.image_members(), ["placeholder"]);
        assert_eq!(file.template, "member");
        assert!(file.members().is_empty());
        for name in ["loadbalancer", "placeholder", "member", "jkstatus"] {
            assert!(file.is_reserved(name), "{name}");
        }
        assert!(!file.is_reserved("shop_web_1"));
        // Nothing to add: the image's lines come back as they were, plus the marker.
        let text = file.render(None);
        assert_eq!(text, format!("{IMAGE_FILE}\n{MEMBERS_MARKER}\n"));
        validate(&text).unwrap();
    }

    #[test]
    fn members_are_rendered_after_the_placeholder_and_read_back() {
        let members = [
            member("shop_web_1", "127.0.1.11", MemberState::Active),
            member("shop_web_2", "127.0.1.12", MemberState::Draining),
        ];
        let mut file = image().with_members(&members);
        file.free.truncate(1);
        let text = file.render(Some(7));
        assert!(text.contains(
            "\nworker.loadbalancer.balance_workers=placeholder,shop_web_1,shop_web_2,_spare_1\n"
        ));
        // The rest of the image is kept: the placeholder, the template, jkstatus.
        for kept in [
            "worker.placeholder.port=0\n",
            "worker.member.ping_mode=A\n",
            "worker.jkstatus.type=status\n",
            "worker.maintain=5\n",
        ] {
            assert!(text.contains(kept), "{kept} missing from\n{text}");
        }
        let tail = text.split(MEMBERS_MARKER).nth(1).unwrap();
        assert_eq!(
            tail,
            "\n# pool generation 7\n\
             \nworker.shop_web_1.reference=worker.member\n\
             worker.shop_web_1.host=127.0.1.11\n\
             worker.shop_web_1.port=8009\n\
             \nworker.shop_web_2.reference=worker.member\n\
             worker.shop_web_2.host=127.0.1.12\n\
             worker.shop_web_2.port=8009\n\
             worker.shop_web_2.activation=D\n\
             \nworker._spare_1.reference=worker.member\n\
             worker._spare_1.host=localhost\n\
             worker._spare_1.port=0\n"
        );
        validate(&text).unwrap();
        // A restarted agent reads its own file back.
        let again = WorkersFile::parse(Path::new("w"), &text).unwrap();
        assert_eq!(again.members(), file.members());
        assert_eq!(again.image_members(), file.image_members());
        assert_eq!(again.render(Some(7)), text);
        assert_eq!(again.free_spares(), 1);
        // Removing every member leaves the image's file and the spares.
        let empty = again.with_members(&[]);
        assert!(empty.members().is_empty() && empty.free_spares() == SPARES);
        let spares: Vec<String> = (1..=SPARES).map(|i| format!("_spare_{i}")).collect();
        assert!(empty.render(None).contains(&format!(
            "balance_workers=placeholder,{}\n",
            spares.join(",")
        )));
    }

    #[test]
    fn members_join_in_spares_and_are_read_back_under_their_names() {
        let a = member("shop_web_1", "127.0.1.11", MemberState::Active);
        let b = member("shop_web_2", "127.0.1.12", MemberState::Active);
        let c = member("shop_web_3", "127.0.1.13", MemberState::Draining);
        let running = image().with_members(std::slice::from_ref(&a));
        assert_eq!(running.free_spares(), SPARES);
        assert!(running.is_reserved("_spare_1") && running.is_reserved("_spare_99"));
        let (joined, assigned) = running
            .with_joined(&[b.clone(), a.clone(), c.clone()])
            .unwrap();
        assert_eq!(
            assigned,
            [
                ("_spare_1".to_owned(), b.clone()),
                ("_spare_2".to_owned(), c.clone())
            ]
        );
        assert_eq!(joined.free_spares(), SPARES - 2);
        assert_eq!(
            (
                joined.worker_of("shop_web_1"),
                joined.worker_of("shop_web_3")
            ),
            ("shop_web_1", "_spare_2")
        );
        let text = joined.render(Some(3));
        validate(&text).unwrap();
        assert!(text.contains("balance_workers=placeholder,_spare_1,shop_web_1,_spare_2,_spare_3,"));
        assert!(text.contains(
            "\nworker._spare_2.reference=worker.member\nworker._spare_2.host=127.0.1.13\n\
             worker._spare_2.port=8009\nworker._spare_2.route=shop_web_3\n\
             worker._spare_2.activation=D\n"
        ));
        // A restarted agent finds the members under their names, in their spares.
        let again = WorkersFile::parse(Path::new("w"), &text).unwrap();
        assert_eq!(again.render(Some(3)), text);
        assert_eq!(
            (again.members(), &again.spare_of, &again.free),
            (joined.members(), &joined.spare_of, &joined.free)
        );
        // A member leaving frees nothing until a reload: its spare stays its.
        let (left, none) = again.with_joined(std::slice::from_ref(&a)).unwrap();
        assert!(none.is_empty() && left.free_spares() == SPARES - 2);
        assert_eq!(left.worker_of("shop_web_2"), "shop_web_2");
        // More joining than spares left: no join.
        let many: Vec<PoolMember> = (0..=SPARES)
            .map(|i| member(&format!("m{i}"), "127.0.1.20", MemberState::Active))
            .collect();
        assert!(running.with_joined(&many).is_none());
        // A member in a worker of another name must be a spare.
        let bad = format!(
            "{IMAGE_FILE}{MEMBERS_MARKER}\nworker.x.host=127.0.1.1\nworker.x.port=8009\n\
             worker.x.route=y\n"
        )
        .replace(
            "balance_workers=placeholder",
            "balance_workers=placeholder,x",
        );
        let err = WorkersFile::parse(Path::new("w"), &bad).unwrap_err();
        assert!(
            err.to_string().contains("a route other than its name"),
            "{err}"
        );
    }

    #[test]
    fn the_images_template_is_understood() {
        // The template with its @KEY@ placeholders: the structure is what matters here.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../etc/autoscaler/images/modjk-splitter/templates/workers.properties");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = WorkersFile::parse(&path, &text).unwrap();
        assert_eq!(file.balancer(), "loadbalancer");
        assert_eq!(file.image_members(), ["placeholder"]);
        assert_eq!(file.template, "member");
        let text = file
            .with_members(&[member("a", "127.0.1.11", MemberState::Draining)])
            .render(Some(1));
        assert!(text.contains("balance_workers=placeholder,a,_spare_1,"));
        assert!(text.contains("worker.a.activation=D\n"));
    }

    #[test]
    fn unusable_files_are_refused_with_the_reason() {
        let cases = [
            (
                IMAGE_FILE.replace("worker.loadbalancer.type=lb\n", ""),
                "expected exactly one worker with type=lb, found 0",
            ),
            (
                format!("{IMAGE_FILE}worker.other.type=lb\n"),
                "expected exactly one worker with type=lb, found 2",
            ),
            (
                IMAGE_FILE.replace("worker.loadbalancer.balance_workers=placeholder\n", ""),
                "expected one worker.loadbalancer.balance_workers line, found 0",
            ),
            (
                IMAGE_FILE.replace("worker.placeholder.reference=worker.member\n", ""),
                "cannot tell which worker members inherit from",
            ),
            (
                format!("{IMAGE_FILE}{MEMBERS_MARKER}\nworker.a.host=h\nworker.a.port=1\n"),
                "member \"a\" is defined below the marker but not in",
            ),
            (
                format!("{IMAGE_FILE}{MEMBERS_MARKER}\nworker.a.color=red\n"),
                "unexpected key \"worker.a.color\"",
            ),
        ];
        for (text, want) in cases {
            let err = WorkersFile::parse(Path::new("w.p"), &text).unwrap_err();
            assert!(err.to_string().starts_with("w.p: "), "{err}");
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn validation_catches_what_apache_t_does_not() {
        let mut file = image().with_members(&[member("a", "127.0.1.11", MemberState::Active)]);
        file.free.clear();
        let good = file.render(None);
        validate(&good).unwrap();
        let cases = [
            // mod_jk would route an undefined member to localhost:8009.
            (
                good.replace(
                    "balance_workers=placeholder,a",
                    "balance_workers=placeholder,a,ghost",
                ),
                "balance worker \"ghost\" is not defined",
            ),
            (
                good.replace("worker.a.host=127.0.1.11\n", ""),
                "balance worker \"a\" has no host",
            ),
            (
                good.replace("worker.a.port=8009", "worker.a.port=http"),
                "balance worker \"a\" has no valid port",
            ),
            (
                good.replace(
                    "balance_workers=placeholder,a",
                    "balance_workers=placeholder,a,a",
                ),
                "lists \"a\" twice",
            ),
            (
                good.replace("balance_workers=placeholder,a", "balance_workers="),
                "has no balance_workers",
            ),
            (
                good.replace("worker.a.", "worker.a-b.")
                    .replace(",a\n", ",a-b\n"),
                "worker name \"a-b\"",
            ),
            (format!("{good}garbage\n"), "\"garbage\" is not key=value"),
            (
                good.replace(
                    "worker.loadbalancer.type=lb",
                    "worker.loadbalancer.type=ajp13",
                ),
                "no worker of type lb",
            ),
        ];
        for (text, want) in cases {
            let err = validate(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }
}
