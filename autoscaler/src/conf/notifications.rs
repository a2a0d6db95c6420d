//! `[oslo_messaging_notifications]`: where notifications go, with oslo.messaging's names,
//! and its typed form, [`NotificationOpts`].

use super::opt::{Choice, OptDecl, OptKind, SectionDecl, SectionValues};

/// The notification drivers, as oslo.messaging names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationDriver {
    /// The v2 `oslo.message` envelope, on the notification topics.
    MessagingV2,
    /// The bare v1 message, on the notification topics.
    Messaging,
    /// Written to the service's log.
    Log,
    /// Dropped.
    Noop,
}

impl NotificationDriver {
    pub const ALL: [NotificationDriver; 4] = [
        NotificationDriver::MessagingV2,
        NotificationDriver::Messaging,
        NotificationDriver::Log,
        NotificationDriver::Noop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NotificationDriver::MessagingV2 => "messagingv2",
            NotificationDriver::Messaging => "messaging",
            NotificationDriver::Log => "log",
            NotificationDriver::Noop => "noop",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Kept in step with [`NotificationDriver`] by a test.
const DRIVERS: &[Choice] = &[
    Choice {
        value: "messagingv2",
        help: "the oslo.messaging v2 envelope, on the notification topics",
    },
    Choice {
        value: "messaging",
        help: "the bare v1 message, on the notification topics",
    },
    Choice {
        value: "log",
        help: "written to the service's log",
    },
    Choice {
        value: "noop",
        help: "dropped",
    },
];

pub const SECTION: SectionDecl = SectionDecl {
    name: "oslo_messaging_notifications",
    help: "Notifications in the oslo.messaging format, for other OpenStack services to \
           read.",
    opts: &[
        OptDecl::new(
            "driver",
            OptKind::List { choices: DRIVERS },
            Some("messagingv2"),
            "Where notifications go; several drivers may be listed. An empty list sends \
             none.",
        ),
        OptDecl::new(
            "topics",
            OptKind::List { choices: &[] },
            Some("notifications"),
            "Topic prefixes notifications are sent to: a notification of priority P goes \
             to the routing key <topic>.<P>, e.g. notifications.info.",
        ),
    ],
};

/// `[oslo_messaging_notifications]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationOpts {
    /// May be empty: no notifications.
    pub driver: Vec<NotificationDriver>,
    pub topics: Vec<String>,
}

impl NotificationOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        NotificationOpts {
            driver: v
                .list("driver")
                .iter()
                .map(|name| {
                    NotificationDriver::from_name(name)
                        .unwrap_or_else(|| panic!("driver {name:?} passed validation"))
                })
                .collect(),
            topics: v.list("topics"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_choices_are_the_driver_names() {
        let declared: Vec<&str> = DRIVERS.iter().map(|c| c.value).collect();
        let names: Vec<&str> = NotificationDriver::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(declared, names);
        for d in NotificationDriver::ALL {
            assert_eq!(NotificationDriver::from_name(d.name()), Some(d));
        }
    }
}
