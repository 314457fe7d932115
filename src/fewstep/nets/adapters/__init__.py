"""Adapters that present other libraries' models with fewstep's network interface."""
