//! What a spec names, as ids Nova takes, found through the openstack crate: the image in
//! the image service (Glance v2: by name, the newest of that name, else by id), the
//! flavor (`Cloud::get_flavor`, by id or name), and the network (`none`, `auto`, an id, or
//! a name in the network service). Found ids are kept for [`CACHE_TTL`], so a steady boot
//! costs one request, the create. An unknown image or flavor is an error naming it and
//! listing what exists, before anything is created.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use openstack::{image::ImageSortKey, Sort};
use osauth::ErrorKind;

use super::{
    protocol::{NetworkUuid, Networks},
    session::{osauth_error, Compute, Retry},
};
use crate::driver::DriverError;

/// How long a found id is trusted: an image uploaded again under the same name gets a new
/// id, which boots see after this long at most.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Names listed in an "unknown" error at most.
const LISTED_MAX: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Image,
    Flavor,
    Network,
}

/// Ids found, with when.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(Kind, String), (String, Instant)>>,
}

/// Whether `text` reads as a UUID (Nova's and Glance's ids), dashes optional.
pub fn looks_like_uuid(text: &str) -> bool {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

impl Resolver {
    fn cached(&self, kind: Kind, name: &str) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(&(kind, name.to_owned()))
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(id, _)| id.clone())
    }

    fn remember(&self, kind: Kind, name: &str, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert((kind, name.to_owned()), (id.to_owned(), Instant::now()));
    }

    /// Forgets what was found for a boot that Nova refused (an image deleted since).
    pub fn forget(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The image's id: by name (`GET /v2/images?name=&sort=created_at:desc&limit=1`: the
    /// newest of that name), else by id (`GET /v2/images/{id}`); unknown:
    /// [`DriverError::UnknownImage`] with the images there are (`GET /v2/images`, every
    /// page: the crate asks for pages until one is empty).
    pub async fn image(&self, compute: &Compute, image: &str) -> Result<String, DriverError> {
        if let Some(id) = self.cached(Kind::Image, image) {
            return Ok(id);
        }
        let cloud = compute.cloud();
        let label = format!("GET /v2/images?name={image}");
        let found = compute
            .crate_call(&label, Retry::Idempotent, || {
                cloud
                    .find_images()
                    .with_name(image)
                    .sort_by(Sort::Desc(ImageSortKey::CreatedAt))
                    // One page of one: the crate would otherwise ask for a next page.
                    .with_limit(1)
                    .all()
            })
            .await
            .map_err(|e| osauth_error(label, &e))?;
        if let Some(newest) = found.first() {
            self.remember(Kind::Image, image, newest.id());
            return Ok(newest.id().clone());
        }
        if looks_like_uuid(image) {
            let label = format!("GET /v2/images/{image}");
            match compute
                .crate_call(&label, Retry::Idempotent, || cloud.get_image(image))
                .await
            {
                Ok(found) => {
                    self.remember(Kind::Image, image, found.id());
                    return Ok(found.id().clone());
                }
                Err(e) if e.kind() == ErrorKind::ResourceNotFound => {}
                Err(e) => return Err(osauth_error(label, &e)),
            }
        }
        let available = compute
            .crate_call("GET /v2/images", Retry::Idempotent, || cloud.list_images())
            .await
            .map(|all| names(all.iter().map(|i| i.name().clone())))
            .unwrap_or_default();
        Err(DriverError::UnknownImage {
            image: image.to_owned(),
            looked_in: "the image service (Glance) has no image of that name or id; images"
                .to_owned(),
            available,
        })
    }

    /// The flavor's id, through the openstack crate (`GET /flavors/{ref}`, else
    /// `GET /flavors` and the one of that name); unknown: [`DriverError::UnknownFlavor`]
    /// with the flavors there are.
    pub async fn flavor(&self, compute: &Compute, flavor: &str) -> Result<String, DriverError> {
        if let Some(id) = self.cached(Kind::Flavor, flavor) {
            return Ok(id);
        }
        let cloud = compute.cloud();
        let label = format!("GET /flavors/{flavor}");
        match compute
            .crate_call(&label, Retry::Idempotent, || cloud.get_flavor(flavor))
            .await
        {
            Ok(f) => {
                self.remember(Kind::Flavor, flavor, f.id());
                Ok(f.id().clone())
            }
            Err(e) if e.kind() == ErrorKind::ResourceNotFound => {
                let available = compute
                    .crate_call("GET /flavors", Retry::Idempotent, || cloud.list_flavors())
                    .await
                    .map(|all| names(all.iter().map(|f| f.name().clone())))
                    .unwrap_or_default();
                Err(DriverError::UnknownFlavor {
                    flavor: flavor.to_owned(),
                    available,
                })
            }
            Err(e) => Err(osauth_error(label, &e)),
        }
    }

    /// The `networks` of the create request: `none` and `auto` as Nova takes them (no
    /// network: `auto`, Nova's choice), an id as it is, a name through the network
    /// service, with the openstack crate (`GET /v2.0/networks?name=`).
    pub async fn networks(
        &self,
        compute: &Compute,
        network: Option<&str>,
    ) -> Result<Networks, DriverError> {
        let Some(network) = network else {
            return Ok(Networks::Keyword("auto".to_owned()));
        };
        if network == "none" || network == "auto" {
            return Ok(Networks::Keyword(network.to_owned()));
        }
        if looks_like_uuid(network) {
            return Ok(Networks::Uuids(vec![NetworkUuid {
                uuid: network.to_owned(),
            }]));
        }
        if let Some(id) = self.cached(Kind::Network, network) {
            return Ok(Networks::Uuids(vec![NetworkUuid { uuid: id }]));
        }
        let unknown = |reason: String| DriverError::UnknownNetwork {
            network: network.to_owned(),
            reason,
        };
        let cloud = compute.cloud();
        let label = format!("GET /v2.0/networks?name={network}");
        // One page of at most two, to tell one from several. (The crate's `one()` would
        // send both its `limit=2` and its pagination's `limit=50`.)
        let found = compute
            .crate_call(&label, Retry::Idempotent, || {
                cloud.find_networks().with_name(network).with_limit(2).all()
            })
            .await
            .map_err(|e| {
                unknown(format!(
                    "cannot ask the network service ({e}); give the network's id instead"
                ))
            })?;
        match found.as_slice() {
            [one] => {
                self.remember(Kind::Network, network, one.id());
                Ok(Networks::Uuids(vec![NetworkUuid {
                    uuid: one.id().clone(),
                }]))
            }
            [] => Err(unknown(
                "the network service has no network of that name".into(),
            )),
            _ => Err(unknown(
                "several networks have that name; give the id of one".into(),
            )),
        }
    }
}

/// Sorted, deduplicated, at most [`LISTED_MAX`] (then `...`).
fn names(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = items.filter(|n| !n.is_empty()).collect();
    names.sort();
    names.dedup();
    if names.len() > LISTED_MAX {
        names.truncate(LISTED_MAX);
        names.push("...".to_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_told_from_names() {
        assert!(looks_like_uuid("bf75c68d-a23e-4061-9366-442d5a92e7cd"));
        assert!(looks_like_uuid("bf75c68da23e40619366442d5a92e7cd"));
        assert!(!looks_like_uuid("tomcat-web"));
        assert!(!looks_like_uuid("bf75c68d-a23e-4061-9366-442d5a92e7cx"));
    }

    #[test]
    fn names_are_sorted_unique_and_bounded() {
        let many = (0..40).map(|n| format!("img-{n:02}"));
        let listed = names(many.chain(["img-00".to_owned(), String::new()]));
        assert_eq!(listed.len(), LISTED_MAX + 1);
        assert_eq!(listed[0], "img-00");
        assert_eq!(listed.last().unwrap(), "...");
    }

    #[test]
    fn found_ids_expire() {
        let r = Resolver::default();
        r.remember(Kind::Image, "web", "id-1");
        assert_eq!(r.cached(Kind::Image, "web").as_deref(), Some("id-1"));
        assert_eq!(r.cached(Kind::Flavor, "web"), None);
        r.forget();
        assert_eq!(r.cached(Kind::Image, "web"), None);
    }
}
