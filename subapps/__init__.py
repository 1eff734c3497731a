"""First-party Nestor sub-apps, one package each."""
