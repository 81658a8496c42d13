//! Pairing the host's marker `kvm_pio` events with the guest's own list (`vftrace.markers`,
//! read by the format crate).
use vftrace_format::markers::GuestMarker;

use crate::align::Marker;

/// Completes `markers` (in any order) with the guest's full TSCs: in time order on both
/// sides, each pio takes the next unused guest marker with its value. Returns the phase of
/// each marker (None when unmatched) and how many were matched.
pub fn attach(markers: &mut [Marker], guest: &[GuestMarker]) -> (Vec<Option<u32>>, usize) {
    let mut guest: Vec<GuestMarker> = guest.to_vec();
    guest.sort_by_key(|g| g.tsc);
    let mut order: Vec<usize> = (0..markers.len()).collect();
    order.sort_by_key(|&i| markers[i].pio_host_tsc);
    let mut phases = vec![None; markers.len()];
    let mut cursor = 0;
    let mut matched = 0;
    for i in order {
        let m = &mut markers[i];
        let found = guest[cursor..]
            .iter()
            .position(|g| g.value == m.guest_tsc_low && g.tsc as u32 == g.value);
        if let Some(k) = found {
            let g = guest[cursor + k];
            m.guest_tsc_high = Some((g.tsc >> 32) as u32);
            m.guest_tsc_after = (g.tsc_after >= g.tsc)
                .then_some(g.tsc_after)
                .filter(|a| *a != 0);
            phases[i] = Some(g.phase);
            cursor += k + 1;
            matched += 1;
        }
    }
    (phases, matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_pairs_in_order_and_skips_unseen() {
        let g = |tsc: u64, phase| GuestMarker {
            tsc,
            value: tsc as u32,
            phase,
            tsc_after: tsc + 10,
        };
        // The same low bits twice (2^32 cycles apart), and one the host never saw.
        let guest = [g(5 << 32 | 7, 1), g(6 << 32 | 7, 2), g(6 << 32 | 9, 3)];
        let pio = |host: u64, low: u32| Marker {
            pio_host_tsc: host,
            host_thread: 1,
            guest_tsc_low: low,
            guest_tsc_high: None,
            guest_tsc_after: None,
        };
        let mut markers = [pio(200, 9), pio(100, 7), pio(150, 7), pio(300, 0x55)];
        let (phases, matched) = attach(&mut markers, &guest);
        assert_eq!(matched, 3);
        assert_eq!(phases, [Some(3), Some(1), Some(2), None]);
        assert_eq!(markers[1].guest_tsc_high, Some(5));
        assert_eq!(markers[2].guest_tsc_high, Some(6));
        assert_eq!(markers[3].guest_tsc_high, None);
        assert_eq!(markers[1].guest_tsc_after, Some((5 << 32 | 7) + 10));
    }
}
