//! How many initialised subscription sockets each tenant holds open on this replica, so one
//! tenant cannot take every socket the process can serve (`websocket.max_sockets_per_tenant`).
//!
//! The count is per process: with N replicas a tenant may hold up to N times the limit. A socket
//! takes a [`SocketSlot`] when its `connection_init` succeeds and gives it back when the slot is
//! dropped, however the socket ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// The setting that caps a tenant's sockets.
pub const LIMIT: &str = "websocket.max_sockets_per_tenant";

/// Open sockets by tenant id. Cheap to clone; every clone shares the counts.
#[derive(Clone, Default)]
pub struct TenantSockets {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl TenantSockets {
    /// Take a slot for one more socket of `tenant_id`, or say how many it already holds.
    pub fn try_open(&self, tenant_id: &str, max: usize) -> Result<SocketSlot, usize> {
        // The lock is never held across an await or a panic-prone call; a poisoned map is
        // still a consistent map of counts.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(tenant_id.to_string()).or_insert(0);
        if *count >= max {
            let held = *count;
            if held == 0 {
                open.remove(tenant_id);
            }
            return Err(held);
        }
        *count += 1;
        Ok(SocketSlot {
            sockets: self.clone(),
            tenant_id: tenant_id.to_string(),
        })
    }

    /// Sockets `tenant_id` holds open now.
    pub fn open(&self, tenant_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(tenant_id).copied().unwrap_or(0)
    }

    fn release(&self, tenant_id: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(tenant_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(tenant_id);
            }
        }
    }
}

/// One open socket of a tenant; dropping it gives the place back.
pub struct SocketSlot {
    sockets: TenantSockets,
    tenant_id: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.sockets.release(&self.tenant_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_limit_is_refused_and_others_are_not() {
        let sockets = TenantSockets::default();
        let a1 = sockets.try_open("ten_a", 2).unwrap();
        let _a2 = sockets.try_open("ten_a", 2).unwrap();
        assert_eq!(sockets.try_open("ten_a", 2).err(), Some(2));
        let _b = sockets.try_open("ten_b", 2).unwrap();
        drop(a1);
        assert_eq!(sockets.open("ten_a"), 1);
        let _a3 = sockets.try_open("ten_a", 2).unwrap();
        assert_eq!(sockets.open("ten_a"), 2);
    }

    #[test]
    fn counts_go_back_to_zero_and_are_forgotten() {
        let sockets = TenantSockets::default();
        drop(sockets.try_open("ten_a", 1).unwrap());
        assert_eq!(sockets.try_open("ten_z", 0).err(), Some(0));
        let open = sockets.open.lock().unwrap();
        assert!(open.is_empty(), "{open:?}");
    }
}
