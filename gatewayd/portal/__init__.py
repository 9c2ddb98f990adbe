"""The web portal on the hotspot and the LAN: pairing endpoints and the admin panel."""
