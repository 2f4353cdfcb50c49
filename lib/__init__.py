"""TitleSweep: fine-tuning recipes that tell correct from wrongly extracted scholarly titles."""
