"""How each model trains: `fit_features` (a head on cached features), `fit_transfer` and `fit_finetune` (a frozen
part through the fastest verified engine, the rest in Keras). `catsdogs.training.fit_images` is the default
trainer (Keras' own fit). The registry (`catsdogs.models.MODELS`) names each model's trainer."""
